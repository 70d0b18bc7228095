# A Seurat object with Signac ChromatinAssays (Signac's own atac_small, from ../shared), whether
# or not Signac is installed (issue 17, item 1). Signac cannot be installed on the test machines,
# so here it is not: every generic dispatching on a ChromatinAssay would stop with "unable to find
# required package 'Signac'"; the counts and ranges are read from the slots instead.

signac_rda <- function() {
  path <- test_path("..", "..", "..", "shared", "data", "real", "signac_atac_small_pbmc",
    "atac_small_Signac.rda")
  skip_if_not(file.exists(path), "../shared/data/real is not available")
  env <- new.env()
  suppressWarnings(load(path, envir = env))
  env$atac_small
}

test_that("RunConvNetVAE reads a ChromatinAssay from its slots, with or without Signac", {
  skip_if_no_python_core()
  atac_small <- signac_rda()
  has_signac <- requireNamespace("Signac", quietly = TRUE)
  before <- atac_small
  msgs <- capture_messages(
    out <- RunConvNetVAE(atac_small,
      assays = "peaks", architecture = "conv-k11s11", n.latent = 5, max.epochs = 2,
      validation.size = 0
    )
  )
  expect_match(
    paste(msgs, collapse = ""),
    "assay 'peaks' has 323 features of .* bp \\(peaks\\); their counts are summed into the 10,000 bp windows"
  )
  expect_identical(atac_small, before)
  emb <- SeuratObject::Embeddings(out, "convnetvae")
  expect_equal(dim(emb), c(100L, 5L))
  expect_identical(rownames(emb), rownames(atac_small@meta.data))
  red <- out@reductions$convnetvae
  expect_length(SeuratObject::Stdev(red), 5L)
  misc <- SeuratObject::Misc(red)
  expect_match(misc$bins[1], "^chr1-[0-9]+-[0-9]+$") # Signac's naming style
  expect_true("RunConvNetVAE" %in% names(out@commands))
  # the other reductions and assays are untouched
  expect_identical(out@reductions$lsi, atac_small@reductions$lsi)
  expect_identical(names(out@assays), names(atac_small@assays))
  if (!has_signac) {
    # what fails without Signac: Seurat's own generics on this object
    expect_error(suppressMessages(suppressWarnings(SeuratObject::Assays(atac_small))), "Signac")
  }
})

test_that("features named otherwise take their coordinates from the ChromatinAssay's ranges", {
  atac_small <- signac_rda()
  peaks <- atac_small@assays$peaks
  counts <- attr(peaks, "counts")
  original <- rownames(counts)
  rownames(counts) <- paste0("peak", seq_len(nrow(counts)))
  attr(peaks, "counts") <- counts
  atac_small@assays$peaks <- peaks
  got <- ConvNetVAE:::.assay_counts(atac_small, "peaks")
  expect_identical(got$features, original) # the ranges give Signac's own names back
  expect_identical(rownames(got$counts), original)
  # the default assay when `assays` is not given
  expect_identical(SeuratObject::DefaultAssay(atac_small), "peaks")
  expect_message(
    a <- ConvNetVAE:::.default_assays(atac_small, NULL, verbose = TRUE),
    "using the default assay 'peaks' .*available: 'peaks', 'bins', 'RNA'"
  )
  expect_identical(a, "peaks")
})
