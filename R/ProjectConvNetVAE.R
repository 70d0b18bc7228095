#' Embed new cells with a saved ConvNet-VAE model
#'
#' Loads the model that \code{\link{RunConvNetVAE}(..., model.dir = )} saved and
#' computes the embedding (latent means) of the cells of \code{object}. The
#' features are rebinned and aligned onto the model's bins, so the new data must
#' use the same genome; bins of the model absent from the new data count as zero.
#' The same cells give the same embedding as the original run.
#'
#' Cells of batches the model was not trained on (new samples) are an error
#' unless \code{adapt = TRUE}: then they are mapped onto the model as a query, as
#' scArches does for scvi-tools. The new batches get their own parameters (their
#' columns of the batch one-hot input of the encoder and decoder, and their
#' per-bin offsets), which alone are trained on the cells given; every weight
#' of the saved model stays frozen, so cells of the model's own batches keep
#' their embedding and the new cells land in the same latent space. Training
#' settings (\code{max.epochs}, \code{learning.rate}, ...) can be passed through
#' \code{...}; the saved model is not changed.
#'
#' @param object A \code{Seurat} object, a \code{SingleCellExperiment}, or a named
#'   list of cells x bins count matrices.
#' @param model.dir The directory the model was saved in.
#' @param ... Passed to the methods, which pass the settings of the section
#'   \emph{Further settings} to Python (with \code{adapt = TRUE}, the training
#'   settings of \code{\link{RunConvNetVAE}} instead).
#' @return As \code{\link{RunConvNetVAE}}: the object with the projected embedding
#'   added, or the embedding matrix.
#' @examples
#' \dontrun{
#' obj <- RunConvNetVAE(obj, assays = c("ATAC", "H3K27ac"), model.dir = "model")
#' new <- ProjectConvNetVAE(new, model.dir = "model")
#' # new samples (batches the model has not seen): train only their parameters
#' new <- ProjectConvNetVAE(new, model.dir = "model", group.by.vars = "sample",
#'   adapt = TRUE)
#' }
#' @export
ProjectConvNetVAE <- function(object, model.dir, ...) {
  UseMethod("ProjectConvNetVAE")
}

.model_info <- function(model.dir) {
  if (!is.character(model.dir) || length(model.dir) != 1L || is.na(model.dir) ||
    !dir.exists(model.dir)) {
    .stop_input(
      "`model.dir` must be the directory of a saved model (RunConvNetVAE(..., model.dir = )); '",
      paste(model.dir, collapse = "', '"), "' does not exist."
    )
  }
  bridge <- .bridge()
  reticulate::py_to_r(.py_call(bridge$model_info(normalizePath(model.dir))))
}

#' @rdname ProjectConvNetVAE
#' @param assays The assays to use; by default the modalities the model was
#'   trained on.
#' @param group.by.vars Batch columns; by default those used in training.
#' @param reduction.name,reduction.key Name and key of the stored reduction.
#' @param adapt Map cells of batches the model has not seen onto it by training
#'   only those batches' parameters (see Details); \code{FALSE}: such cells are an
#'   error.
#' @param verbose Print progress and notes as messages.
#' @export
ProjectConvNetVAE.Seurat <- function(object, model.dir, assays = NULL, group.by.vars = NULL,
                                     adapt = FALSE, reduction.name = "convnetvae.projected",
                                     reduction.key = "convnetvaeprojected_", verbose = TRUE,
                                     ...) {
  .check_name(reduction.name, "reduction.name")
  .check_key(reduction.key)
  info <- .model_info(model.dir)
  if (is.null(assays)) {
    assays <- as.character(unlist(info$modalities))
  }
  if (is.null(group.by.vars)) {
    group.by.vars <- .nullable_chr(info$group_by_vars)
  }
  prep <- .seurat_inputs(object, assays, group.by.vars, as.numeric(info$bin_size), verbose)
  res <- .project_embed(
    prep$matrices, "features_x_cells", prep$cells, prep$batch, model.dir, list(...), verbose,
    adapt
  )
  emb <- res$embedding
  colnames(emb) <- paste0(reduction.key, seq_len(ncol(emb)))
  reduc <- .dim_reduc(emb, reduction.key, assays[1L], misc = list(
    config = res$config, history = res$history, model.dir = normalizePath(model.dir),
    assays = assays, adapt = adapt
  ), counts = prep$matrices[[1L]])
  object <- .store_reduction(object, reduction.name, reduc)
  command <- SeuratObject::LogSeuratCommand(object = object, return.command = TRUE)
  .log_command(object, command)
}

#' @rdname ProjectConvNetVAE
#' @param assay.type For a SingleCellExperiment, the assay with raw counts.
#' @export
ProjectConvNetVAE.SingleCellExperiment <- function(object, model.dir, assays = NULL,
                                                   group.by.vars = NULL, assay.type = "counts",
                                                   adapt = FALSE,
                                                   reduction.name = "CONVNETVAE_PROJECTED",
                                                   verbose = TRUE, ...) {
  .check_name(reduction.name, "reduction.name")
  info <- .model_info(model.dir)
  if (is.null(assays)) {
    assays <- as.character(unlist(info$modalities))
  }
  if (is.null(group.by.vars)) {
    group.by.vars <- .nullable_chr(info$group_by_vars)
  }
  prep <- .sce_inputs(object, assays, group.by.vars, assay.type, as.numeric(info$bin_size),
    verbose)
  res <- .project_embed(
    prep$matrices, "features_x_cells", prep$cells, prep$batch, model.dir, list(...), verbose,
    adapt
  )
  emb <- res$embedding
  colnames(emb) <- paste0(reduction.name, "_", seq_len(ncol(emb)))
  rownames(emb) <- colnames(object)
  SingleCellExperiment::reducedDim(object, reduction.name) <- emb
  object
}

#' @rdname ProjectConvNetVAE
#' @param meta.data For the default method, a data.frame with the batch columns.
#' @export
ProjectConvNetVAE.default <- function(object, model.dir, group.by.vars = NULL, meta.data = NULL,
                                      adapt = FALSE, verbose = TRUE, ...) {
  info <- .model_info(model.dir)
  if (is.null(group.by.vars) && !is.null(meta.data)) {
    group.by.vars <- .nullable_chr(info$group_by_vars)
  }
  prep <- .default_inputs(object, group.by.vars, meta.data, as.numeric(info$bin_size), verbose)
  res <- .project_embed(
    prep$matrices, "cells_x_features", prep$cells, prep$batch, model.dir, list(...), verbose,
    adapt
  )
  emb <- res$embedding
  colnames(emb) <- paste0("convnetvae_", seq_len(ncol(emb)))
  if (is.null(prep$names)) {
    rownames(emb) <- NULL
  }
  emb
}

.nullable_chr <- function(x) {
  x <- unlist(x)
  if (length(x) == 0L) NULL else as.character(x)
}
