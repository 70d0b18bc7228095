"""Model shapes, parameter counts, likelihoods and the convolution layout."""

import numpy as np
import pytest
import scipy.stats as st
import torch
import torch.nn.functional as F

from convnetvae.errors import ConvNetVAEError
from convnetvae.model import VAE, ModuleConfig, count_parameters, parse_architecture
from convnetvae.model.layout import ConvLayout, gather_positions, upsample_conv_as_transposed_weight
from convnetvae.model.likelihoods import nb_log_prob, poisson_log_prob


def _vae(arch="conv-k31s31", m=3, lengths=(25_000,), b=2, **kw):
    cfg = ModuleConfig(n_modalities=m, chrom_lengths=list(lengths), n_batches=b,
                       architecture=arch, **kw)
    return VAE(cfg)


def test_parameter_count_matches_reference_k31s31():
    # the authors' demo model: 3 modalities, 2 batches, 25,000 bins -> 4,172,095 parameters
    assert count_parameters(_vae("conv-k31s31", chrom_aware=False,
                                 batch_offsets=False)) == 4_172_095
    # the per-batch bin offsets add batches x modalities x bins
    assert count_parameters(_vae("conv-k31s31", chrom_aware=False)) == 4_172_095 + 2 * 3 * 25_000


@pytest.mark.parametrize("m,arch,lo,hi", [(2, "conv-k51s51", 0.18, 0.22),
                                          (3, "conv-k51s51", 0.12, 0.145),
                                          (2, "conv-k31s31", 0.30, 0.35)])
def test_parameter_ratios_vs_fc_vae(m, arch, lo, hi):
    conv = count_parameters(_vae(arch, m=m, chrom_aware=False, batch_offsets=False))
    fc = count_parameters(_vae("fc-l1", m=m, batch_offsets=False))
    assert lo < conv / fc < hi


@pytest.mark.parametrize("arch", ["conv-k11s11", "conv-k51s51", "conv-k11s3x1", "conv-k11s3x2",
                                  "conv-k11s3x3", "conv-k7s2x2", "fc-l1", "fc-l2", "fc-l3"])
@pytest.mark.parametrize("m", [1, 3])
def test_shapes_any_architecture_and_modalities(arch, m):
    lengths = (257, 190, 153)
    vae = _vae(arch, m=m, lengths=lengths, b=3, n_latent=7, n_hidden=16)
    x = torch.poisson(torch.full((5, m, sum(lengths)), 0.3))
    batch = torch.tensor([0, 1, 2, 0, 1])
    out = vae(x, batch)
    assert out["mu"].shape == (5, 7) and out["kl"].shape == (5,)
    assert out["reconstruction"].shape == (5,) and torch.isfinite(out["reconstruction"]).all()
    logw = vae.decode(out["mu"], batch)
    assert logw.shape == (5, m, sum(lengths))
    assert torch.allclose(logw.exp().sum(-1), torch.ones(5, m), atol=1e-4)


def test_architecture_names():
    a = parse_architecture("conv-k11s3x2")
    assert (a.kernel, a.stride, a.channels) == (11, 3, (32, 64))
    assert parse_architecture("FC-L2").n_layers == 2
    for bad in ["conv", "conv-k0s3", "mlp", "fc-l9", 3]:
        with pytest.raises(ConvNetVAEError):
            parse_architecture(bad)


def test_fewer_bins_than_kernel_is_a_clear_error():
    with pytest.raises(ConvNetVAEError, match="kernel"):
        _vae("conv-k51s51", lengths=(30,))


def test_poisson_log_prob_matches_scipy():
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(50), size=(4, 2))
    x = np.stack([[rng.multinomial(n, w[i, j]) for j, n in enumerate((30, 7))] for i in range(4)])
    x[1, 1] = 0  # an empty modality: 0 log 0 = 0
    lib = x.sum(-1)
    got = poisson_log_prob(torch.tensor(x, dtype=torch.float64), torch.tensor(np.log(w)),
                           torch.tensor(lib, dtype=torch.float64)).numpy()
    want = st.poisson.logpmf(x, lib[..., None] * w).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_nb_log_prob_matches_scipy():
    rng = np.random.default_rng(1)
    w = rng.dirichlet(np.ones(40), size=(3, 2))
    x = rng.poisson(3.0, size=(3, 2, 40)).astype(float)
    lib = x.sum(-1)
    log_theta = rng.normal(0, 1, size=(2, 40))
    got = nb_log_prob(torch.tensor(x), torch.tensor(np.log(w)), torch.tensor(lib),
                      torch.tensor(log_theta)).numpy()
    mu = lib[..., None] * w
    theta = np.exp(log_theta)[None]
    want = st.nbinom.logpmf(x, theta, theta / (theta + mu)).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-8)


@pytest.mark.parametrize("k,s", [(31, 31), (11, 3), (5, 2), (4, 4)])
def test_transposed_conv_equals_upsample_then_conv(k, s):
    torch.manual_seed(0)
    n, L = 40, 14  # one segment of n bins reduced to L = ceil(n / s) positions
    lay = ConvLayout((n,), k, s)
    L = lay.out_lengths[0]
    x = torch.randn(2, 4, L, dtype=torch.float64)
    w = torch.randn(3, 4, k, dtype=torch.float64)
    p = (k - 1) // 2
    # reference: nearest upsampling by s, zero padding, stride-1 conv; crop n outputs
    u = F.interpolate(x, scale_factor=s, mode="nearest")
    u = F.pad(u, (p, k))
    ref = F.conv1d(u, w)[..., :n]
    in_map, out_map = lay.decoder_maps()
    h = gather_positions(x, torch.as_tensor(in_map))
    got = F.conv_transpose1d(h, upsample_conv_as_transposed_weight(w, s), stride=s)
    got = got.index_select(2, torch.as_tensor(out_map))
    torch.testing.assert_close(got, ref)


def test_chromosome_aware_encoder_and_decoder_do_not_mix_chromosomes():
    torch.manual_seed(0)
    lengths = (100, 77, 64)
    vae = _vae("conv-k11s3x2", m=2, lengths=lengths, b=1, n_hidden=8, n_latent=4).eval()
    enc = vae.encoder
    x = torch.poisson(torch.full((3, 2, sum(lengths)), 1.0))
    x2 = x.clone()
    x2[:, :, 95:100] += 7.0  # the last bins of chr1
    f1, f2 = enc.conv_features(torch.log1p(x)), enc.conv_features(torch.log1p(x2))
    n1 = enc.layouts[-1].out_lengths[0]
    assert not torch.equal(f1[..., :n1], f2[..., :n1])
    assert torch.equal(f1[..., n1:], f2[..., n1:])  # exact: other chromosomes untouched
    # decoder: changing the reduced features of chr2 changes only chr2's bins
    dec = vae.decoder
    z = torch.randn(3, 4)
    h = dec.fc(z).view(3, dec.channels[-1], dec.n_reduced)
    lens = dec.layouts[-1].out_lengths
    h2 = h.clone()
    h2[..., lens[0]:lens[0] + lens[1]] += 1.0

    def run(h):
        for j, post in enumerate(dec.post):
            w = upsample_conv_as_transposed_weight(dec.weights[j], dec.stride)
            h = gather_positions(h, getattr(dec, f"in_map{j}"))
            h = F.conv_transpose1d(h, w, stride=dec.stride)
            h = h.index_select(2, getattr(dec, f"out_map{j}")) + dec.biases[j].view(1, -1, 1)
            h = post(h)
        return h

    y1, y2 = run(h), run(h2)
    a, b = lengths[0], lengths[0] + lengths[1]
    assert torch.equal(y1[..., :a], y2[..., :a]) and torch.equal(y1[..., b:], y2[..., b:])
    assert not torch.equal(y1[..., a:b], y2[..., a:b])


def test_chrom_aware_off_reproduces_concatenated_convolution():
    torch.manual_seed(0)
    lengths = (50, 40)
    vae = _vae("conv-k11s3", m=2, lengths=lengths, b=1, n_hidden=8, n_latent=4,
               chrom_aware=False).eval()
    enc = vae.encoder
    h = torch.randn(2, 2, 90)
    got = enc.convs[0](gather_positions(h, enc.in_map0)).index_select(2, enc.out_map0)
    pad = (11 - 3) // 2
    ref = F.conv1d(F.pad(h, (pad, 11)), enc.convs[0].weight, enc.convs[0].bias, stride=3)
    torch.testing.assert_close(got, ref[..., :30])
    # a change at the end of chr1 now leaks into the first windows of chr2
    h2 = h.clone()
    h2[..., 48:50] += 5
    g2 = enc.convs[0](gather_positions(h2, enc.in_map0)).index_select(2, enc.out_map0)
    assert not torch.equal(got[..., 17:], g2[..., 17:])


def test_masked_modality_cannot_change_loss_or_embedding():
    torch.manual_seed(0)
    vae = _vae("conv-k11s11", m=3, lengths=(120, 80), b=2, n_hidden=8, n_latent=4,
               use_mask=True).eval()
    x = torch.poisson(torch.full((4, 3, 200), 0.5))
    mask = torch.tensor([[True, True, False]] * 4)
    b = torch.tensor([0, 1, 0, 1])
    x2 = x.clone()
    x2[:, 2] = torch.poisson(torch.full((4, 200), 3.0))
    mu1, _ = vae.encode(x, b, mask)
    mu2, _ = vae.encode(x2, b, mask)
    torch.testing.assert_close(mu1, mu2)
    z = torch.randn(4, 4)
    torch.testing.assert_close(vae.log_px_z(x, z, b, mask), vae.log_px_z(x2, z, b, mask))
    assert not torch.allclose(vae.log_px_z(x, z, b), vae.log_px_z(x2, z, b))


@pytest.mark.parametrize("likelihood", ["poisson", "nb"])
def test_loader_log_factorials_equal_dense_lgamma(likelihood):
    """sum_g log(x_g!) from the sparse non-zeros (the loader) equals the dense computation, and
    the ELBO is the same with either (same weights, same noise)."""
    import scipy.sparse as sp

    from convnetvae.data.loader import InMemorySource, MinibatchLoader

    rng = np.random.default_rng(0)
    mats = [sp.random(20, 300, density=0.1, format="csr", random_state=j,
                      data_rvs=lambda n: rng.integers(1, 40, n)).astype(np.float32)
            for j in range(2)]
    mats[0][3] = 0  # an empty row
    mats[0].eliminate_zeros()
    mb = next(iter(MinibatchLoader(InMemorySource(mats), np.zeros(20, int), None, batch_size=20)))
    dense = torch.lgamma(mb.x.double() + 1).sum(-1)
    assert mb.log_factorials.shape == (20, 2)
    np.testing.assert_allclose(mb.log_factorials.double().numpy(), dense.numpy(), rtol=1e-6)
    assert float(mb.log_factorials[3, 0]) == 0.0
    vae = VAE(ModuleConfig(n_modalities=2, chrom_lengths=[300], n_batches=1,
                           architecture="conv-k11s11", likelihood=likelihood, n_hidden=16,
                           n_latent=4)).eval()
    a = vae(mb.x, mb.batch, mb.mask, sample=False)["reconstruction"]
    b = vae(mb.x, mb.batch, mb.mask, sample=False,
            log_factorials=mb.log_factorials)["reconstruction"]
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5)
