#' Embed new cells with a saved ConvNet-VAE model
#'
#' Loads the model that \code{\link{RunConvNetVAE}(..., model.dir = )} saved and
#' computes the embedding (latent means) of the cells of \code{object}. The
#' features are rebinned and aligned onto the model's bins, so the new data must
#' use the same genome; bins of the model absent from the new data count as zero.
#' The same cells give the same embedding as the original run.
#'
#' @param object A \code{Seurat} object, a \code{SingleCellExperiment}, or a named
#'   list of cells x bins count matrices.
#' @param model.dir The directory the model was saved in.
#' @param ... Passed to the methods, which pass the settings of the section
#'   \emph{Further settings} to Python.
#' @return As \code{\link{RunConvNetVAE}}: the object with the projected embedding
#'   added, or the embedding matrix.
#' @examples
#' \dontrun{
#' obj <- RunConvNetVAE(obj, assays = c("ATAC", "H3K27ac"), model.dir = "model")
#' new <- ProjectConvNetVAE(new, model.dir = "model")
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
#' @param verbose Print progress.
#' @export
ProjectConvNetVAE.Seurat <- function(object, model.dir, assays = NULL, group.by.vars = NULL,
                                     reduction.name = "convnetvae.projected",
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
  prep <- .seurat_inputs(object, assays, group.by.vars, as.numeric(info$bin_size))
  res <- .project_embed(
    prep$matrices, "features_x_cells", prep$cells, prep$batch, model.dir, list(...), verbose
  )
  emb <- res$embedding
  colnames(emb) <- paste0(reduction.key, seq_len(ncol(emb)))
  reduc <- SeuratObject::CreateDimReducObject(
    embeddings = emb, key = reduction.key, assay = assays[1L],
    misc = list(config = res$config, model.dir = normalizePath(model.dir), assays = assays)
  )
  object[[reduction.name]] <- reduc
  command <- SeuratObject::LogSeuratCommand(object = object, return.command = TRUE)
  object <- .log_command(object, command)
  object
}

#' @rdname ProjectConvNetVAE
#' @param assay.type For a SingleCellExperiment, the assay with raw counts.
#' @export
ProjectConvNetVAE.SingleCellExperiment <- function(object, model.dir, assays = NULL,
                                                   group.by.vars = NULL, assay.type = "counts",
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
  prep <- .sce_inputs(object, assays, group.by.vars, assay.type, as.numeric(info$bin_size))
  res <- .project_embed(
    prep$matrices, "features_x_cells", prep$cells, prep$batch, model.dir, list(...), verbose
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
                                      verbose = TRUE, ...) {
  info <- .model_info(model.dir)
  if (is.null(group.by.vars) && !is.null(meta.data)) {
    group.by.vars <- .nullable_chr(info$group_by_vars)
  }
  prep <- .default_inputs(object, group.by.vars, meta.data, as.numeric(info$bin_size))
  res <- .project_embed(
    prep$matrices, "cells_x_features", prep$cells, prep$batch, model.dir, list(...), verbose
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
