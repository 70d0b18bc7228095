#' ConvNetVAE: batch-corrected embeddings of single-cell multimodal epigenomic data
#'
#' An R interface to the Python core of ConvNetVAE (a convolutional variational
#' autoencoder over genomic bins; Gao and Welch 2025). Start with
#' \code{\link{RunConvNetVAE}}; \code{\link{install_convnetvae}} sets up the
#' Python core. Loading the package never starts Python.
#'
#' Options: \code{convnetvae.python} (path to the Python executable of the core),
#' \code{convnetvae.envname} (name of the virtualenv made by
#' \code{install_convnetvae()}, default \code{"r-convnetvae"}),
#' \code{convnetvae.recorded.python} (\code{FALSE} ignores the Python recorded
#' by \code{make setup}; see \code{\link{convnetvae_python}}).
#'
#' @keywords internal
#' @importClassesFrom Matrix dgCMatrix
"_PACKAGE"

#' Paths of the example data shipped with ConvNetVAE
#'
#' \describe{
#'   \item{\code{"seurat"}}{\code{example_seurat.rds}: a simulated Seurat object
#'     with 300 cells, three assays (\code{ATAC}, \code{H3K27ac},
#'     \code{H3K27me3}) over 2,000 bins of 10 kb with Signac-style names
#'     (\code{chr1-1-10000}), two batches (\code{batch}) and four cell types
#'     (\code{cell_type}).}
#'   \item{\code{"fragments"}}{\code{example_fragments.tsv.gz}: a fragment file
#'     (chrom, start, end, barcode, count; 0-based) of the ATAC reads of the
#'     first 30 cells.}
#' }
#' Both are made by \code{data-raw/make_example.R} in the source repository.
#'
#' @param which \code{"seurat"} or \code{"fragments"}.
#' @return The file path.
#' @examples
#' path <- convnetvae_example("seurat")
#' file.exists(path)
#' @export
convnetvae_example <- function(which = c("seurat", "fragments")) {
  which <- match.arg(which)
  file <- switch(which,
    seurat = "example_seurat.rds",
    fragments = "example_fragments.tsv.gz"
  )
  system.file("extdata", file, package = "ConvNetVAE", mustWork = TRUE)
}
