#' Batch-corrected embeddings of multimodal epigenomic data with ConvNet-VAE
#'
#' Bins every modality into fixed genomic windows, stacks the modalities as
#' channels of one signal per cell and learns a low-dimensional, batch-corrected
#' embedding with a convolutional variational autoencoder (Gao and Welch 2025).
#' The work is done by the Python core of ConvNetVAE through reticulate; sparse
#' count matrices are passed as their CSC arrays and are never densified.
#'
#' \code{RunConvNetVAE} is an S3 generic, in the pattern of \code{RunHarmony}:
#' \itemize{
#'   \item \code{Seurat}: reads the counts slot of each assay in \code{assays}
#'     (a Signac \code{ChromatinAssay} or a plain \code{Assay} whose features are
#'     genomic ranges such as \code{chr1-1-10000}) and stores a
#'     \code{DimReduc} named \code{reduction.name}, with the configuration
#'     (\code{config}), loss history (\code{history}, one row per epoch), the
#'     selected bins (\code{bins}), \code{model.dir}, \code{assays} and
#'     \code{group.by.vars} in its \code{misc}, and logs the command.
#'   \item \code{SingleCellExperiment}: modalities are the main experiment plus
#'     alternative experiments (\code{altExp}), or named assays; writes
#'     \code{reducedDim(object, reduction.name)} and keeps the configuration and
#'     history in \code{metadata(object)$ConvNetVAE}.
#'   \item \code{default}: a named list of cells x bins matrices (dense or
#'     sparse, column names are bin names) returning the embedding matrix.
#' }
#'
#' Everything is checked and computed before the result is assigned, so an error
#' or an interrupt leaves no half-added reduction; the object passed in is never
#' modified.
#'
#' @param object A \code{Seurat} object, a \code{SingleCellExperiment}, or a named
#'   list of cells x bins count matrices.
#' @param ... Further arguments passed to the methods; the methods pass further
#'   settings of the model and the training loop to Python (see the section
#'   \emph{Further settings}, e.g. \code{validation.size = 0} or
#'   \code{early.stopping = FALSE}).
#' @return The object with the embedding added (Seurat, SingleCellExperiment), or
#'   the cells x \code{n.latent} embedding matrix (default method) with the
#'   configuration and history in \code{attr(, "convnetvae")}.
#' @seealso \code{\link{ProjectConvNetVAE}}, \code{\link{install_convnetvae}}
#' @examples
#' \dontrun{
#' obj <- readRDS(system.file("extdata", "example_seurat.rds", package = "ConvNetVAE"))
#' obj <- RunConvNetVAE(obj,
#'   assays = c("ATAC", "H3K27ac", "H3K27me3"),
#'   group.by.vars = "batch", architecture = "conv-k11s11", max.epochs = 5
#' )
#' obj <- Seurat::RunUMAP(obj, reduction = "convnetvae", dims = 1:30)
#' }
#' @export
RunConvNetVAE <- function(object, ...) {
  UseMethod("RunConvNetVAE")
}

#' @rdname RunConvNetVAE
#' @param assays Names of the assays (modalities) to use: Seurat assays (by default
#'   \code{DefaultAssay(object)}, with a message), or for a SingleCellExperiment the
#'   main experiment's name (or \code{"main"}), names of \code{altExp}s, or assay
#'   names.
#' @param group.by.vars Names of meta data (\code{colData}) columns with the batch
#'   of each cell; several columns are combined. \code{NULL} for no batch. For the
#'   default method also a vector with one batch label per cell.
#' @param bin.size Width in bp of the genomic windows features are rebinned into.
#' @param n.bins Keep the union of each modality's highest-count bins up to this
#'   number (the paper's rule; None keeps all). In R, \code{NULL} keeps all bins.
#' @param blacklist \code{NULL}, a BED file, a \code{GRanges} or a data.frame with
#'   \code{chrom}, \code{start}, \code{end} (0-based): bins overlapping these
#'   regions are dropped.
#' @param architecture Model architecture: auto (one conv layer sized to the number of
#'   bins; 8 channels when the loadings are tied, otherwise 32), e.g. conv-k31s31,
#'   conv-k11s3x2 (two conv layers of kernel 11, stride 3) or fc-l1 (the FC-VAE baseline).
#' @param likelihood Count likelihood: poisson (the paper) or nb (negative binomial, one
#'   dispersion per bin and modality).
#' @param n.latent Dimension of the embedding (latent space).
#' @param max.epochs Passes over the training cells; None chooses the length from the
#'   data (a one-cycle learning-rate schedule); the paper: 300 or 200. In R, \code{NULL}
#'   chooses the length from the data.
#' @param batch.size Cells per minibatch; None: 128, or fewer (down to 32) when the data are
#'   small, so that an epoch has at least 16 optimiser steps.
#' @param learning.rate Adam learning rate: the peak of the one-cycle schedule or the
#'   constant rate (None: 1e-2 one-cycle, 1e-3 constant as the paper).
#' @param device Device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...
#' @param seed Random seed of the weights, the validation split, the shuffling and the
#'   sampling.
#' @param model.dir Directory to save the trained model in (for
#'   \code{\link{ProjectConvNetVAE}}); \code{NULL} to not save it. It is checked
#'   to be writable before training starts.
#' @param reduction.name Name of the stored reduction.
#' @param reduction.key Key of the reduction; must match
#'   \code{^[a-zA-Z][a-zA-Z0-9]*_$}.
#' @param verbose Print progress and notes as messages (the estimated training
#'   time, epochs, rebinning); \code{FALSE} for none. Python's warnings arrive as R
#'   warnings either way.
#' @export
RunConvNetVAE.Seurat <- function(object, assays = NULL, group.by.vars = NULL, bin.size = 10000,
                                 n.bins = 25000, blacklist = NULL,
                                 architecture = "auto", likelihood = "poisson",
                                 n.latent = 30, max.epochs = NULL, batch.size = NULL,
                                 learning.rate = NULL, device = "auto", seed = 0,
                                 model.dir = NULL, reduction.name = "convnetvae",
                                 reduction.key = "convnetvae_", verbose = TRUE, ...) {
  assays <- .default_assays(object, assays, verbose)
  prep <- .seurat_inputs(object, assays, group.by.vars, bin.size, verbose)
  .check_name(reduction.name, "reduction.name")
  .check_key(reduction.key)
  config <- .run_config(environment(), blacklist, model.dir, assays, group.by.vars)
  res <- .train_embed(
    prep$matrices, "features_x_cells", prep$cells, prep$batch, config, list(...), verbose
  )
  emb <- res$embedding
  colnames(emb) <- paste0(reduction.key, seq_len(ncol(emb)))
  reduc <- .dim_reduc(emb, reduction.key, assays[1L], misc = list(
    config = res$config, history = res$history, bins = .bins_in_style(res$bins, prep$style),
    model.dir = config$model_dir, assays = assays, group.by.vars = group.by.vars
  ), counts = prep$matrices[[1L]])
  # assign last: nothing above touched `object`
  object <- .store_reduction(object, reduction.name, reduc)
  command <- SeuratObject::LogSeuratCommand(object = object, return.command = TRUE)
  .log_command(object, command)
}

#' `assays` of a Seurat method: DefaultAssay(object) when not given, said in a message
#' @noRd
.default_assays <- function(object, assays, verbose) {
  if (!is.null(assays)) {
    return(assays)
  }
  assays <- SeuratObject::DefaultAssay(object)
  if (isTRUE(verbose)) {
    message(
      "ConvNetVAE: using the default assay '", assays, "' (`assays` not given; available: ",
      paste0("'", .seurat_assays(object), "'", collapse = ", "), ")."
    )
  }
  assays
}

#' The returned bin names (chr1:0-10000) in the naming form of the user's features
#' @noRd
.bins_in_style <- function(bins, style) {
  if (length(bins) == 0L) {
    return(bins)
  }
  .format_ranges(.parse_ranges(bins), style)
}

#' Collect and check the inputs of a Seurat object (through the assays' slots: see R/seurat.R)
#' @noRd
.seurat_inputs <- function(object, assays, group.by.vars, bin.size, verbose = FALSE) {
  available <- .seurat_assays(object)
  if (!is.character(assays) || length(assays) == 0L || anyNA(assays) || anyDuplicated(assays)) {
    .stop_input("`assays` must be a character vector of distinct assay names.")
  }
  missing_assays <- setdiff(assays, available)
  if (length(missing_assays) > 0L) {
    .stop_input(
      "Assay ", paste0("'", missing_assays, "'", collapse = ", "), " does not exist in the ",
      "Seurat object. Available assays: ", paste0("'", available, "'", collapse = ", "), "."
    )
  }
  .check_setting(bin.size, "bin.size", "data")
  cells <- .seurat_cells(object)
  ranges <- list()
  matrices <- list()
  style <- NULL
  for (a in assays) {
    got <- .assay_counts(object, a)
    m <- .as_counts(got$counts, a)
    ranges[[a]] <- .check_ranges(got$features, a)
    style <- if (is.null(style)) .name_style(got$features) else style
    rownames(m) <- got$features
    if (!identical(colnames(m), cells)) {
      m <- m[, cells, drop = FALSE]
    }
    matrices[[a]] <- m
  }
  .check_shared_bins(ranges, bin.size)
  if (isTRUE(verbose)) {
    .rebin_notes(ranges, bin.size)
  }
  batch <- .batch_labels(methods::slot(object, "meta.data"), group.by.vars,
    "Seurat object's meta data")
  list(matrices = matrices, cells = cells, batch = batch, style = style)
}

#' @rdname RunConvNetVAE
#' @param assay.type For a SingleCellExperiment, the assay holding raw counts in
#'   each experiment.
#' @export
RunConvNetVAE.SingleCellExperiment <- function(object, assays = NULL, group.by.vars = NULL,
                                               assay.type = "counts", bin.size = 10000,
                                               n.bins = 25000, blacklist = NULL,
                                               architecture = "auto",
                                               likelihood = "poisson", n.latent = 30,
                                               max.epochs = NULL, batch.size = NULL,
                                               learning.rate = NULL, device = "auto",
                                               seed = 0, model.dir = NULL,
                                               reduction.name = "CONVNETVAE", verbose = TRUE,
                                               ...) {
  prep <- .sce_inputs(object, assays, group.by.vars, assay.type, bin.size, verbose)
  .check_name(reduction.name, "reduction.name")
  config <- .run_config(environment(), blacklist, model.dir, prep$assays, group.by.vars)
  res <- .train_embed(
    prep$matrices, "features_x_cells", prep$cells, prep$batch, config, list(...), verbose
  )
  emb <- res$embedding
  colnames(emb) <- paste0(reduction.name, "_", seq_len(ncol(emb)))
  rownames(emb) <- colnames(object)
  md <- S4Vectors::metadata(object)
  md$ConvNetVAE[[reduction.name]] <- list(
    config = res$config, history = res$history, bins = .bins_in_style(res$bins, prep$style),
    model.dir = config$model_dir,
    assays = prep$assays, group.by.vars = group.by.vars
  )
  # assign last
  SingleCellExperiment::reducedDim(object, reduction.name) <- emb
  S4Vectors::metadata(object) <- md
  object
}

.sce_main_name <- function(object) {
  nm <- SingleCellExperiment::mainExpName(object)
  if (is.null(nm) || is.na(nm) || !nzchar(nm)) "main" else nm
}

#' Collect and check the inputs of a SingleCellExperiment
#' @noRd
.sce_inputs <- function(object, assays, group.by.vars, assay.type, bin.size, verbose = FALSE) {
  main <- .sce_main_name(object)
  alts <- SingleCellExperiment::altExpNames(object)
  named <- SummarizedExperiment::assayNames(object)
  if (is.null(assays)) {
    if (length(alts) == 0L) {
      .stop_input(
        "`assays` is required when the SingleCellExperiment has no altExps: give the assay ",
        "names to use as modalities (available: ", paste0("'", named, "'", collapse = ", "), ")."
      )
    }
    assays <- c(main, alts)
  }
  if (!is.character(assays) || length(assays) == 0L || anyNA(assays) || anyDuplicated(assays)) {
    .stop_input("`assays` must be a character vector of distinct names.")
  }
  .check_name(assay.type, "assay.type")
  .check_setting(bin.size, "bin.size", "data")
  cells <- colnames(object)
  if (is.null(cells)) {
    cells <- paste0("cell", seq_len(ncol(object)))
  }
  matrices <- list()
  ranges <- list()
  for (a in assays) {
    if (a == main || a %in% alts) {
      exp <- if (a == main) object else SingleCellExperiment::altExp(object, a)
      if (!assay.type %in% SummarizedExperiment::assayNames(exp)) {
        .stop_input(
          "Experiment '", a, "' has no assay '", assay.type, "' (its assays: ",
          paste0("'", SummarizedExperiment::assayNames(exp), "'", collapse = ", "),
          "). Set `assay.type` to the assay with raw counts."
        )
      }
      m <- SummarizedExperiment::assay(exp, assay.type, withDimnames = TRUE)
      feats <- rownames(exp)
    } else if (a %in% named) {
      m <- SummarizedExperiment::assay(object, a, withDimnames = TRUE)
      feats <- rownames(object)
    } else {
      .stop_input(
        "Assay '", a, "' does not exist in the SingleCellExperiment: it is neither the main ",
        "experiment ('", main, "'), an altExp (", paste0("'", alts, "'", collapse = ", "),
        ") nor an assay (", paste0("'", named, "'", collapse = ", "), ")."
      )
    }
    if (is.null(feats)) {
      .stop_input("The features of '", a, "' have no names; they must be genomic ranges.")
    }
    ranges[[a]] <- .check_ranges(feats, a)
    m <- .as_counts(m, a)
    rownames(m) <- feats
    colnames(m) <- cells
    matrices[[a]] <- m
  }
  .check_shared_bins(ranges, bin.size)
  if (isTRUE(verbose)) {
    .rebin_notes(ranges, bin.size)
  }
  meta <- as.data.frame(SummarizedExperiment::colData(object))
  batch <- .batch_labels(meta, group.by.vars, "colData")
  list(
    matrices = matrices, cells = cells, batch = batch, assays = assays,
    style = .name_style(rownames(matrices[[1L]]))
  )
}

#' @rdname RunConvNetVAE
#' @param meta.data For the default method, an optional data.frame with one row
#'   per cell holding the \code{group.by.vars} columns.
#' @export
RunConvNetVAE.default <- function(object, group.by.vars = NULL, meta.data = NULL,
                                  bin.size = 10000, n.bins = 25000, blacklist = NULL,
                                  architecture = "auto", likelihood = "poisson",
                                  n.latent = 30, max.epochs = NULL, batch.size = NULL,
                                  learning.rate = NULL, device = "auto", seed = 0,
                                  model.dir = NULL, verbose = TRUE, ...) {
  prep <- .default_inputs(object, group.by.vars, meta.data, bin.size, verbose)
  config <- .run_config(
    environment(), blacklist, model.dir, names(object),
    if (is.character(group.by.vars) && !is.null(meta.data)) group.by.vars else NULL
  )
  res <- .train_embed(
    prep$matrices, "cells_x_features", prep$cells, prep$batch, config, list(...), verbose
  )
  emb <- res$embedding
  colnames(emb) <- paste0("convnetvae_", seq_len(ncol(emb)))
  if (is.null(prep$names)) {
    rownames(emb) <- NULL
  }
  attr(emb, "convnetvae") <- list(
    config = res$config, history = res$history, bins = .bins_in_style(res$bins, prep$style),
    model.dir = config$model_dir
  )
  emb
}

#' Collect and check a named list of cells x bins matrices
#' @noRd
.default_inputs <- function(object, group.by.vars, meta.data, bin.size, verbose = FALSE) {
  if (!is.list(object) || length(object) == 0L || is.null(names(object)) ||
    any(!nzchar(names(object))) || anyDuplicated(names(object))) {
    .stop_input(
      "RunConvNetVAE() needs a Seurat object, a SingleCellExperiment, or a named list of ",
      "cells x bins count matrices (one per modality, distinct names); got an object of class '",
      class(object)[1L], "'."
    )
  }
  .check_setting(bin.size, "bin.size", "data")
  n <- unique(vapply(object, function(m) as.integer(NROW(m)), integer(1)))
  if (length(n) != 1L) {
    .stop_input(
      "The matrices must all have the same cells (rows); got ",
      paste(vapply(object, NROW, integer(1)), collapse = ", "), " rows."
    )
  }
  cell_names <- rownames(object[[1L]])
  for (a in names(object)) {
    rn <- rownames(object[[a]])
    if (!is.null(cell_names) && !is.null(rn) && !identical(rn, cell_names)) {
      .stop_input(
        "The row (cell) names of '", a, "' differ from those of '", names(object)[1L],
        "'; put the cells in the same order in every matrix."
      )
    }
  }
  ranges <- list()
  matrices <- list()
  for (a in names(object)) {
    m <- object[[a]]
    if (length(dim(m)) != 2L) {
      .stop_input("Modality '", a, "' is not a matrix (cells x bins).")
    }
    feats <- colnames(m)
    if (is.null(feats)) {
      .stop_input("The columns of '", a, "' have no names; they must be bins like chr1-1-10000.")
    }
    ranges[[a]] <- .check_ranges(feats, a)
    m <- .as_counts(m, a)
    colnames(m) <- feats
    matrices[[a]] <- m
  }
  .check_shared_bins(ranges, bin.size)
  if (isTRUE(verbose)) {
    .rebin_notes(ranges, bin.size)
  }
  cells <- if (is.null(cell_names)) paste0("cell", seq_len(n)) else cell_names
  batch <- NULL
  if (!is.null(group.by.vars)) {
    if (is.character(group.by.vars) && !is.null(meta.data) && length(group.by.vars) < n) {
      if (!is.data.frame(meta.data) || nrow(meta.data) != n) {
        .stop_input("`meta.data` must be a data.frame with one row per cell (", n, ").")
      }
      batch <- .batch_labels(meta.data, group.by.vars, "meta.data")
    } else {
      if (length(group.by.vars) != n) {
        .stop_input(
          "`group.by.vars` must be column names of `meta.data` or one batch label per cell (",
          n, " cells); got ", length(group.by.vars), " values."
        )
      }
      if (anyNA(group.by.vars)) {
        .stop_input(
          "`group.by.vars` has NA for ", sum(is.na(group.by.vars)), " of ", n, " cells."
        )
      }
      batch <- as.character(group.by.vars)
      .check_batch_sizes(batch, "`group.by.vars`")
    }
  }
  list(
    matrices = matrices, cells = cells, batch = batch, names = cell_names,
    style = .name_style(colnames(matrices[[1L]]))
  )
}
