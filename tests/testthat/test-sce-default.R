# SingleCellExperiment and default (list of matrices) methods.

make_sce <- function(obj) {
  counts <- lapply(modalities, function(a) SeuratObject::GetAssayData(obj, assay = a, slot = "counts"))
  names(counts) <- modalities
  sce <- SingleCellExperiment::SingleCellExperiment(
    assays = list(counts = counts$ATAC),
    colData = S4Vectors::DataFrame(obj[[]][, c("batch", "cell_type")])
  )
  SingleCellExperiment::mainExpName(sce) <- "ATAC"
  for (a in modalities[-1]) {
    SingleCellExperiment::altExp(sce, a) <- SummarizedExperiment::SummarizedExperiment(
      assays = list(counts = counts[[a]])
    )
  }
  sce
}

test_that("RunConvNetVAE.SingleCellExperiment uses the main experiment plus altExps", {
  skip_if_no_python_core()
  sce <- make_sce(example_object())
  before <- sce
  model_dir <- file.path(tempdir(), "sce-model")
  unlink(model_dir, recursive = TRUE)
  out <- do.call(RunConvNetVAE, c(list(sce, group.by.vars = "batch", model.dir = model_dir), fast_args))
  expect_identical(sce, before)
  emb <- SingleCellExperiment::reducedDim(out, "CONVNETVAE")
  expect_equal(dim(emb), c(300L, 8L))
  expect_identical(rownames(emb), colnames(sce))
  meta <- S4Vectors::metadata(out)$ConvNetVAE$CONVNETVAE
  expect_identical(meta$assays, modalities)
  expect_equal(unlist(meta$config$modalities), modalities)
  expect_equal(nrow(meta$history), 2L)
  # projection with the saved model gives the same embedding
  proj <- ProjectConvNetVAE(sce, model.dir = model_dir, verbose = FALSE)
  expect_equal(
    unname(SingleCellExperiment::reducedDim(proj, "CONVNETVAE_PROJECTED")), unname(emb),
    tolerance = 1e-6
  )
})

test_that("RunConvNetVAE.SingleCellExperiment accepts named assays as modalities", {
  skip_if_no_python_core()
  obj <- example_object()
  a <- SeuratObject::GetAssayData(obj, assay = "ATAC", slot = "counts")
  k <- SeuratObject::GetAssayData(obj, assay = "H3K27ac", slot = "counts")
  sce <- SingleCellExperiment::SingleCellExperiment(assays = list(atac = a, k27ac = k))
  out <- do.call(RunConvNetVAE, c(list(sce, assays = c("atac", "k27ac"), reduction.name = "CNV"), fast_args))
  expect_equal(dim(SingleCellExperiment::reducedDim(out, "CNV")), c(300L, 8L))
  expect_error(
    RunConvNetVAE(sce, assays = c("atac", "nope")),
    "Assay 'nope' does not exist in the SingleCellExperiment"
  )
  expect_error(RunConvNetVAE(sce), "`assays` is required when the SingleCellExperiment has no altExps")
  expect_error(
    RunConvNetVAE(sce, assays = c("atac", "k27ac"), group.by.vars = "batch"),
    "column 'batch' does not exist in the colData"
  )
})

test_that("RunConvNetVAE.default embeds a named list of cells x bins matrices", {
  skip_if_no_python_core()
  obj <- example_object()
  mats <- lapply(modalities, function(a) cells_by_bins(obj, a))
  names(mats) <- modalities
  model_dir <- file.path(tempdir(), "default-model")
  unlink(model_dir, recursive = TRUE)
  emb <- do.call(RunConvNetVAE, c(list(mats, group.by.vars = obj$batch, model.dir = model_dir), fast_args))
  expect_true(is.matrix(emb))
  expect_equal(dim(emb), c(300L, 8L))
  expect_identical(rownames(emb), colnames(obj))
  info <- attr(emb, "convnetvae")
  expect_equal(info$config$n_cells, 300)
  expect_equal(unlist(info$config$batch_categories), c("batch1", "batch2"))
  # the same through meta.data + column name
  emb2 <- do.call(RunConvNetVAE, c(list(mats, group.by.vars = "batch", meta.data = obj[[]]), fast_args))
  expect_equal(unname(emb2), unname(emb), ignore_attr = TRUE)
  # dense matrices work too (here: the first 100 cells), and projection reproduces the embedding
  dense <- lapply(mats, function(m) as.matrix(m[1:100, ]))
  pemb <- ProjectConvNetVAE(dense, model.dir = model_dir, group.by.vars = obj$batch[1:100])
  expect_equal(unname(pemb), unname(emb[1:100, ]), tolerance = 1e-5, ignore_attr = TRUE)
})
