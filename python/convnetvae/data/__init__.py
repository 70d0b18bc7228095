"""Data: simulation, the AnnData contract, readers and minibatch loading."""

from .simulate import simulate

__all__ = ["simulate"]

# genomic data pipeline (fragments / count matrices -> the data contract)
from .backed import read_backed  # noqa: E402
from .bins import (  # noqa: E402
    format_bin_names,
    parse_bin_names,
    rebin_matrix,
    select_top_bins,
    sort_bins,
)
from .fragments import read_fragments  # noqa: E402
from .genome import make_bins, read_blacklist, read_chrom_sizes, sort_chromosomes  # noqa: E402
from .readers import read_10x_h5, read_counts, read_mtx, reads_to_fragments, rebin  # noqa: E402

__all__ += ["read_backed", "format_bin_names", "parse_bin_names", "rebin_matrix", "select_top_bins", "sort_bins",
            "read_fragments", "make_bins", "read_blacklist", "read_chrom_sizes",
            "sort_chromosomes", "read_10x_h5", "read_counts", "read_mtx", "reads_to_fragments",
            "rebin"]
