# Generated from python/convnetvae/settings.py by
#   python -m convnetvae.settings --write-r .
# Do not edit by hand: tests/python/test_settings.py fails when it is out of date.
# Per group, one entry per setting given from R (by its R name): the Python name, type,
# default, bounds, choices and one-line doc. .check_setting() in R/validate.R applies
# these rules before Python is started; Python checks them again (and the domain).

.settings <- list(
  model = list(
    `architecture` = list(
      name = "architecture", type = "character", optional = FALSE, default = "auto",
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = TRUE,
      doc = "Model architecture: auto (one conv layer sized to the number of bins; 8 channels when the loadings are tied, otherwise 32), e.g. conv-k31s31, conv-k11s3x2 (two conv layers of kernel 11, stride 3) or fc-l1 (the FC-VAE baseline)."
    ),
    `likelihood` = list(
      name = "likelihood", type = "character", optional = FALSE, default = "poisson",
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = c("poisson", "nb"), formal = TRUE,
      doc = "Count likelihood: poisson (the paper) or nb (negative binomial, one dispersion per bin and modality)."
    ),
    `n.latent` = list(
      name = "n_latent", type = "integer", optional = FALSE, default = 30,
      min = 1.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = TRUE,
      doc = "Dimension of the embedding (latent space)."
    ),
    `n.hidden` = list(
      name = "n_hidden", type = "integer", optional = FALSE, default = 128,
      min = 1.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Width of the fully connected hidden layer."
    ),
    `dropout` = list(
      name = "dropout", type = "double", optional = FALSE, default = 0.2,
      min = 0.0, max = 1.0, min_open = FALSE, max_open = TRUE,
      choices = NULL, formal = FALSE,
      doc = "Dropout rate."
    ),
    `chrom.aware` = list(
      name = "chrom_aware", type = "logical", optional = FALSE, default = TRUE,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Pad each chromosome on its own so no kernel mixes bins of two chromosomes (False: the paper's kernels run across chromosome boundaries)."
    ),
    `batch.offsets` = list(
      name = "batch_offsets", type = "logical", optional = FALSE, default = TRUE,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Give the decoder a learned log-rate offset per batch, modality and bin (False: the paper's decoder)."
    ),
    `input.transform` = list(
      name = "input_transform", type = "character", optional = FALSE, default = "tfidf",
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = c("log1p", "depth", "tfidf"), formal = FALSE,
      doc = "What the encoder sees: depth (log of counts scaled to the median depth), tfidf (the same weighted by inverse bin frequency) or log1p (the paper's log(1 + x))."
    ),
    `bin.offsets` = list(
      name = "bin_offsets", type = "logical", optional = FALSE, default = TRUE,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Give the decoder a log-rate offset per modality and bin, started at the data's mean profile (False: the paper's decoder)."
    ),
    `bin.loadings` = list(
      name = "bin_loadings", type = "logical", optional = TRUE, default = NULL,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Add a learned loading per modality, bin and latent dimension to the decoder's log-rates, a linear decoder beside the convolutional one; None: on up to 100,000 bins x modalities (False: the paper's decoder)."
    ),
    `encoder.loadings` = list(
      name = "encoder_loadings", type = "logical", optional = TRUE, default = NULL,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Add a learned weight per modality, bin and latent dimension from the encoder's input to the latent mean, a linear encoder beside the convolutional one; None: on up to 100,000 bins x modalities (False: the paper's encoder)."
    ),
    `tie.loadings` = list(
      name = "tie_loadings", type = "logical", optional = TRUE, default = NULL,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Tie the encoder's free weights to the decoder's bin loadings (the loadings times a learnt gain per latent dimension, as PCA's encoder is its decoder transposed) instead of a matrix of their own; None: tied when both kinds of loadings are on and at most half of the counts are non-zero, as in peak data (True: always, False: a matrix of their own)."
    ),
    `loadings.start` = list(
      name = "loadings_start", type = "character", optional = FALSE, default = "zero",
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = c("zero", "lsi", "auto"), formal = FALSE,
      doc = "How the free bin and encoder loadings start: zero, lsi (the directions of a truncated SVD of the encoder's input, as in LSI), or auto (lsi when at most half of the input is non-zero, as in peak data)."
    ),
    `seed` = list(
      name = "seed", type = "integer", optional = FALSE, default = 0,
      min = 0.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = TRUE,
      doc = "Random seed of the weights, the validation split, the shuffling and the sampling."
    )
  ),
  train = list(
    `max.epochs` = list(
      name = "max_epochs", type = "integer", optional = TRUE, default = NULL,
      min = 1.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = TRUE,
      doc = "Passes over the training cells; None chooses the length from the data (a one-cycle learning-rate schedule); the paper: 300 or 200."
    ),
    `time.budget` = list(
      name = "time_budget", type = "double", optional = FALSE, default = 1.0,
      min = 0.0, max = NA, min_open = TRUE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Training time of an automatic-length run (max_epochs=None) as a multiple of the default budget (1 minute per 1,000 cells per modality, up to three, on 2 CPU cores): 4 lets it train about four times as long. The length still stops at what the data need (about 1,000 optimiser steps, at most 200 epochs). Small sets gain from more (docs/benchmarks.md)."
    ),
    `time.guard` = list(
      name = "time_guard", type = "logical", optional = FALSE, default = TRUE,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Keep an automatic-length run within its budget (time_budget times the default budget, at least 10 seconds) on a slower or busier machine: when the first epochs show that the planned length would overrun it, the rest of the learning-rate schedule is compressed into the epochs that fit, with a warning. False: always the planned length, the same on every machine."
    ),
    `batch.size` = list(
      name = "batch_size", type = "integer", optional = TRUE, default = NULL,
      min = 2.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = TRUE,
      doc = "Cells per minibatch; None: 128, or fewer (down to 32) when the data are small, so that an epoch has at least 16 optimiser steps."
    ),
    `learning.rate` = list(
      name = "lr", type = "double", optional = TRUE, default = NULL,
      min = 0.0, max = NA, min_open = TRUE, max_open = FALSE,
      choices = NULL, formal = TRUE,
      doc = "Adam learning rate: the peak of the one-cycle schedule or the constant rate (None: 1e-2 one-cycle, 1e-3 constant as the paper)."
    ),
    `lr.schedule` = list(
      name = "lr_schedule", type = "character", optional = FALSE, default = "auto",
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = c("auto", "onecycle", "constant"), formal = FALSE,
      doc = "Learning-rate schedule: onecycle (warm-up, then cosine decay), constant (the paper), or auto (onecycle when max_epochs is None, else constant)."
    ),
    `validation.size` = list(
      name = "validation_size", type = "double", optional = FALSE, default = 0.1,
      min = 0.0, max = 1.0, min_open = FALSE, max_open = TRUE,
      choices = NULL, formal = FALSE,
      doc = "Fraction of cells held out for validation and early stopping (0 = none)."
    ),
    `early.stopping` = list(
      name = "early_stopping", type = "logical", optional = FALSE, default = TRUE,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "With the constant schedule, stop when the validation loss has not improved for patience epochs and keep the best weights (False: train exactly max_epochs, as the paper)."
    ),
    `patience` = list(
      name = "patience", type = "integer", optional = FALSE, default = 20,
      min = 1.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Epochs without improvement before early stopping."
    ),
    `min.delta` = list(
      name = "min_delta", type = "double", optional = FALSE, default = 0.0,
      min = 0.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Smallest decrease of the validation loss that counts as an improvement."
    ),
    `kl.warmup.epochs` = list(
      name = "kl_warmup_epochs", type = "integer", optional = TRUE, default = NULL,
      min = 0.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Linearly increase the KL weight over this many epochs (0 = off, as the paper); None: over the first half of a one-cycle run, off with the constant schedule."
    ),
    `grad.clip` = list(
      name = "grad_clip", type = "double", optional = TRUE, default = 100.0,
      min = 0.0, max = NA, min_open = TRUE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Clip the gradient norm to this value (None = off)."
    ),
    `weight.decay` = list(
      name = "weight_decay", type = "double", optional = FALSE, default = 0.0,
      min = 0.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Adam weight decay (L2) of every weight but the per-batch offsets."
    ),
    `device` = list(
      name = "device", type = "character", optional = FALSE, default = "auto",
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = TRUE,
      doc = "Device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ..."
    ),
    `mixed.precision` = list(
      name = "mixed_precision", type = "logical", optional = FALSE, default = FALSE,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "bfloat16 autocast of the forward pass (meant for GPUs; weights stay float32)."
    ),
    `checkpoint.dir` = list(
      name = "checkpoint_dir", type = "character", optional = TRUE, default = NULL,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Directory for resumable checkpoints (None = none)."
    ),
    `checkpoint.every` = list(
      name = "checkpoint_every", type = "integer", optional = FALSE, default = 1,
      min = 1.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Write a checkpoint every this many epochs."
    ),
    `resume` = list(
      name = "resume", type = "logical", optional = FALSE, default = FALSE,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Continue from the last checkpoint in checkpoint_dir."
    ),
    `resume.allow.changes` = list(
      name = "resume_allow_changes", type = "logical", optional = FALSE, default = FALSE,
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "With resume: continue even though the data's counts or the run's settings differ from the checkpoint's (the differences are recorded in train_config)."
    ),
    `n.threads` = list(
      name = "n_threads", type = "integer", optional = TRUE, default = NULL,
      min = 1.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "CPU threads for torch (None: torch's choice)."
    ),
    `shuffle.block.size` = list(
      name = "shuffle_block_size", type = "integer", optional = TRUE, default = NULL,
      min = 1.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Shuffle blocks of this many consecutive cells instead of single cells, for long reads from disk (None: shuffle cells freely)."
    )
  ),
  data = list(
    `bin.size` = list(
      name = "bin_size", type = "integer", optional = FALSE, default = 10000,
      min = 1.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = TRUE,
      doc = "Width in bp of the genomic windows features are rebinned into."
    ),
    `n.bins` = list(
      name = "n_bins", type = "integer", optional = TRUE, default = 25000,
      min = 1.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = TRUE,
      doc = "Keep the union of each modality's highest-count bins up to this number (the paper's rule; None keeps all)."
    )
  ),
  embed = list(
    `batch.size` = list(
      name = "batch_size", type = "integer", optional = FALSE, default = 512,
      min = 1.0, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Cells per forward pass when embedding."
    ),
    `device` = list(
      name = "device", type = "character", optional = FALSE, default = "auto",
      min = NA, max = NA, min_open = FALSE, max_open = FALSE,
      choices = NULL, formal = FALSE,
      doc = "Device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ..."
    )
  )
)

#' @rdname RunConvNetVAE
#' @section Further settings:
#' Passed through \code{...} to Python, with their defaults:
#' \describe{
#'   \item{\code{n.hidden = 128}}{Width of the fully connected hidden layer.}
#'   \item{\code{dropout = 0.2}}{Dropout rate.}
#'   \item{\code{chrom.aware = TRUE}}{Pad each chromosome on its own so no kernel mixes bins of two chromosomes (False: the paper's kernels run across chromosome boundaries).}
#'   \item{\code{batch.offsets = TRUE}}{Give the decoder a learned log-rate offset per batch, modality and bin (False: the paper's decoder).}
#'   \item{\code{input.transform = "tfidf"}}{What the encoder sees: depth (log of counts scaled to the median depth), tfidf (the same weighted by inverse bin frequency) or log1p (the paper's log(1 + x)).}
#'   \item{\code{bin.offsets = TRUE}}{Give the decoder a log-rate offset per modality and bin, started at the data's mean profile (False: the paper's decoder).}
#'   \item{\code{bin.loadings = NULL}}{Add a learned loading per modality, bin and latent dimension to the decoder's log-rates, a linear decoder beside the convolutional one; None: on up to 100,000 bins x modalities (False: the paper's decoder).}
#'   \item{\code{encoder.loadings = NULL}}{Add a learned weight per modality, bin and latent dimension from the encoder's input to the latent mean, a linear encoder beside the convolutional one; None: on up to 100,000 bins x modalities (False: the paper's encoder).}
#'   \item{\code{tie.loadings = NULL}}{Tie the encoder's free weights to the decoder's bin loadings (the loadings times a learnt gain per latent dimension, as PCA's encoder is its decoder transposed) instead of a matrix of their own; None: tied when both kinds of loadings are on and at most half of the counts are non-zero, as in peak data (True: always, False: a matrix of their own).}
#'   \item{\code{loadings.start = "zero"}}{How the free bin and encoder loadings start: zero, lsi (the directions of a truncated SVD of the encoder's input, as in LSI), or auto (lsi when at most half of the input is non-zero, as in peak data).}
#'   \item{\code{time.budget = 1}}{Training time of an automatic-length run (max_epochs=None) as a multiple of the default budget (1 minute per 1,000 cells per modality, up to three, on 2 CPU cores): 4 lets it train about four times as long. The length still stops at what the data need (about 1,000 optimiser steps, at most 200 epochs). Small sets gain from more (docs/benchmarks.md).}
#'   \item{\code{time.guard = TRUE}}{Keep an automatic-length run within its budget (time_budget times the default budget, at least 10 seconds) on a slower or busier machine: when the first epochs show that the planned length would overrun it, the rest of the learning-rate schedule is compressed into the epochs that fit, with a warning. False: always the planned length, the same on every machine.}
#'   \item{\code{lr.schedule = "auto"}}{Learning-rate schedule: onecycle (warm-up, then cosine decay), constant (the paper), or auto (onecycle when max_epochs is None, else constant).}
#'   \item{\code{validation.size = 0.1}}{Fraction of cells held out for validation and early stopping (0 = none).}
#'   \item{\code{early.stopping = TRUE}}{With the constant schedule, stop when the validation loss has not improved for patience epochs and keep the best weights (False: train exactly max_epochs, as the paper).}
#'   \item{\code{patience = 20}}{Epochs without improvement before early stopping.}
#'   \item{\code{min.delta = 0}}{Smallest decrease of the validation loss that counts as an improvement.}
#'   \item{\code{kl.warmup.epochs = NULL}}{Linearly increase the KL weight over this many epochs (0 = off, as the paper); None: over the first half of a one-cycle run, off with the constant schedule.}
#'   \item{\code{grad.clip = 100}}{Clip the gradient norm to this value (None = off).}
#'   \item{\code{weight.decay = 0}}{Adam weight decay (L2) of every weight but the per-batch offsets.}
#'   \item{\code{mixed.precision = FALSE}}{bfloat16 autocast of the forward pass (meant for GPUs; weights stay float32).}
#'   \item{\code{checkpoint.dir = NULL}}{Directory for resumable checkpoints (None = none).}
#'   \item{\code{checkpoint.every = 1}}{Write a checkpoint every this many epochs.}
#'   \item{\code{resume = FALSE}}{Continue from the last checkpoint in checkpoint_dir.}
#'   \item{\code{resume.allow.changes = FALSE}}{With resume: continue even though the data's counts or the run's settings differ from the checkpoint's (the differences are recorded in train_config).}
#'   \item{\code{n.threads = NULL}}{CPU threads for torch (None: torch's choice).}
#'   \item{\code{shuffle.block.size = NULL}}{Shuffle blocks of this many consecutive cells instead of single cells, for long reads from disk (None: shuffle cells freely).}
#' }
#' @name RunConvNetVAE
NULL

#' @rdname ProjectConvNetVAE
#' @section Further settings:
#' Passed through \code{...} to Python, with their defaults:
#' \describe{
#'   \item{\code{batch.size = 512}}{Cells per forward pass when embedding.}
#'   \item{\code{device = "auto"}}{Device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...}
#' }
#' @name ProjectConvNetVAE
NULL
