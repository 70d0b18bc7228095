# Shared helpers of the ConvNetVAE tests.

# Tiny, fast training settings: a single conv layer of kernel = stride = 11, few epochs.
fast_args <- list(
  architecture = "conv-k11s11", n.latent = 8, max.epochs = 2, batch.size = 64,
  verbose = FALSE, validation.size = 0
)

example_object <- function() {
  readRDS(convnetvae_example("seurat"))
}

modalities <- c("ATAC", "H3K27ac", "H3K27me3")

skip_if_no_python_core <- function() {
  skip_if_not(
    ConvNetVAE::convnetvae_available(),
    "the Python core of ConvNetVAE is not available (set CONVNETVAE_PYTHON)"
  )
}

# Run R code in a fresh R process (own Python state); returns list(status, output).
run_r_subprocess <- function(code, env = character()) {
  script <- tempfile(fileext = ".R")
  writeLines(code, script)
  on.exit(unlink(script))
  libs <- paste(.libPaths(), collapse = .Platform$path.sep)
  out <- suppressWarnings(system2(
    file.path(R.home("bin"), "Rscript"), c("--vanilla", shQuote(script)),
    stdout = TRUE, stderr = TRUE,
    env = c(paste0("R_LIBS=", shQuote(libs)), env)
  ))
  status <- attr(out, "status")
  list(status = if (is.null(status)) 0L else status, output = paste(out, collapse = "\n"))
}

# A modality matrix (cells x bins) with Signac-style bin names for the default method.
cells_by_bins <- function(obj, assay) {
  Matrix::t(SeuratObject::GetAssayData(obj, assay = assay, slot = "counts"))
}
