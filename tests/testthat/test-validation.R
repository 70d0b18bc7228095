# Bad input: each stops with a clear message before Python is touched, and the object passed in
# is unchanged. These tests do not need the Python core.

test_that("an assay that does not exist is an error naming it", {
  obj <- example_object()
  before <- obj
  expect_error(
    RunConvNetVAE(obj, assays = c("ATAC", "H3K4me3"), verbose = FALSE),
    "Assay 'H3K4me3' does not exist.*Available assays: 'ATAC', 'H3K27ac', 'H3K27me3'",
    class = "convnetvae_input_error"
  )
  expect_error(RunConvNetVAE(obj, assays = character()), "`assays` must be a character vector",
    class = "convnetvae_input_error"
  )
  expect_identical(obj, before)
})

test_that("features that are not genomic ranges are an error", {
  obj <- example_object()
  genes <- SeuratObject::GetAssayData(obj, assay = "H3K27ac", slot = "counts")
  rownames(genes) <- paste0("Gene", seq_len(nrow(genes)))
  obj[["RNA"]] <- SeuratObject::CreateAssayObject(counts = genes)
  before <- obj
  expect_error(
    RunConvNetVAE(obj, assays = c("ATAC", "RNA"), verbose = FALSE),
    "features of assay 'RNA' are not genomic ranges.*'Gene1'.*chr1-1-10000",
    class = "convnetvae_input_error"
  )
  expect_identical(obj, before)
})

test_that("assays with no shared bins are an error", {
  obj <- example_object()
  m <- SeuratObject::GetAssayData(obj, assay = "H3K27ac", slot = "counts")
  rownames(m) <- sub("^chr", "", rownames(m)) # Ensembl-style names: 1-1-10000
  obj[["Ensembl"]] <- SeuratObject::CreateAssayObject(counts = m)
  before <- obj
  expect_error(
    RunConvNetVAE(obj, assays = c("ATAC", "Ensembl"), verbose = FALSE),
    "'ATAC' and 'Ensembl' share no genomic bins.*'chr1' vs '1'",
    class = "convnetvae_input_error"
  )
  expect_identical(obj, before)
})

test_that("a group.by.vars column that does not exist or has NA is an error", {
  obj <- example_object()
  before <- obj
  expect_error(
    RunConvNetVAE(obj, assays = modalities, group.by.vars = "sample", verbose = FALSE),
    "column 'sample' does not exist",
    class = "convnetvae_input_error"
  )
  obj$batch_na <- obj$batch
  obj$batch_na[c(3, 7)] <- NA
  before_na <- obj
  expect_error(
    RunConvNetVAE(obj, assays = modalities, group.by.vars = "batch_na", verbose = FALSE),
    "column 'batch_na' has NA for 2 of 300 cells",
    class = "convnetvae_input_error"
  )
  expect_identical(obj, before_na)
  expect_identical(before, example_object())
})

test_that("a reduction key not matching ^[a-zA-Z][a-zA-Z0-9]*_$ is an error", {
  obj <- example_object()
  before <- obj
  for (key in c("convnetvae", "1cnv_", "conv_net_", "conv-net_", "", NA_character_)) {
    expect_error(
      RunConvNetVAE(obj, assays = modalities, reduction.key = key, verbose = FALSE),
      "reduction.key` must match", fixed = FALSE,
      class = "convnetvae_input_error"
    )
  }
  expect_identical(obj, before)
})

test_that("a non-count (normalized) data slot is an error", {
  obj <- example_object()
  norm <- log1p(SeuratObject::GetAssayData(obj, assay = "H3K27ac", slot = "counts"))
  # counts replaced by normalized values
  obj2 <- SeuratObject::SetAssayData(obj, slot = "counts", new.data = norm, assay = "H3K27ac")
  before <- obj2
  expect_error(
    RunConvNetVAE(obj2, assays = modalities, verbose = FALSE),
    "counts of assay 'H3K27ac' are not raw counts \\(they contain non-integer values",
    class = "convnetvae_input_error"
  )
  expect_identical(obj2, before)
  # an assay made from normalized data only (empty counts slot)
  obj3 <- obj
  obj3[["normonly"]] <- SeuratObject::CreateAssayObject(data = norm)
  expect_error(
    RunConvNetVAE(obj3, assays = c("ATAC", "normonly"), verbose = FALSE),
    "Assay 'normonly' has no counts",
    class = "convnetvae_input_error"
  )
})

test_that("other bad arguments are errors", {
  obj <- example_object()
  expect_error(RunConvNetVAE(obj, assays = modalities, bin.size = 0), "`bin.size` must be")
  expect_error(RunConvNetVAE(obj, assays = modalities, likelihood = "zinb"), "`likelihood`")
  expect_error(RunConvNetVAE(obj, assays = modalities, blacklist = "/no/such.bed"), "`blacklist`")
  expect_error(RunConvNetVAE(1:3), "needs a Seurat object, a SingleCellExperiment, or a named list")
  m <- cells_by_bins(obj, "ATAC")
  expect_error(
    RunConvNetVAE(list(ATAC = m, K27 = m[1:10, ])),
    "must all have the same cells"
  )
  expect_error(
    RunConvNetVAE(list(ATAC = m), group.by.vars = rep("a", 5)),
    "one batch label per cell \\(300 cells\\); got 5 values"
  )
})

test_that("feature names in every common form parse to 0-based coordinates", {
  r <- ConvNetVAE:::.parse_ranges(c("chr1-1-10000", "chr1:10000-20000", "chr2_0_10000", "chrUn_KI270302v1-1-500", "gene"))
  expect_equal(r$chrom, c("chr1", "chr1", "chr2", "chrUn_KI270302v1", NA))
  expect_equal(r$start, c(0, 10000, 0, 0, NA))
  expect_equal(r$end, c(10000, 20000, 10000, 500, NA))
  expect_equal(r$ok, c(TRUE, TRUE, TRUE, TRUE, FALSE))
})

test_that("sparse matrices are encoded as bytes without densifying", {
  m <- Matrix::rsparsematrix(50, 40, 0.1)
  e <- ConvNetVAE:::.encode_csc(m)
  expect_equal(length(e$data[[1]]), 8L * length(m@x))
  expect_equal(readBin(e$indices[[1]], "integer", length(m@i), size = 4, endian = "little"), m@i)
  expect_equal(readBin(e$data[[1]], "double", length(m@x), size = 8, endian = "little"), m@x)
  dense <- matrix(rnorm(6), 3)
  back <- ConvNetVAE:::.decode_matrix(list(
    shape = list(3L, 2L), data = writeBin(as.vector(dense), raw(), endian = "little")
  ))
  expect_equal(back, dense)
})
