# End to end on the example Seurat object (few epochs, tiny architecture).

run_example <- function(obj, ...) {
  do.call(RunConvNetVAE, c(list(obj, assays = modalities, group.by.vars = "batch"), fast_args,
    list(...)))
}

test_that("RunConvNetVAE.Seurat stores a complete reduction and logs the command", {
  skip_if_no_python_core()
  obj <- example_object()
  before <- obj
  model_dir <- file.path(tempdir(), "seurat-model")
  unlink(model_dir, recursive = TRUE)
  out <- RunConvNetVAE(obj,
    assays = modalities, group.by.vars = "batch", architecture = "conv-k11s11",
    n.latent = 8, max.epochs = 2, batch.size = 64, verbose = FALSE, validation.size = 0,
    model.dir = model_dir
  )
  expect_identical(obj, before) # the input is never modified
  red <- out[["convnetvae"]]
  expect_s4_class(red, "DimReduc")
  emb <- SeuratObject::Embeddings(out, "convnetvae")
  expect_equal(dim(emb), c(300L, 8L))
  expect_identical(rownames(emb), colnames(obj)) # names and order kept
  expect_identical(colnames(emb), paste0("convnetvae_", 1:8))
  expect_identical(SeuratObject::Key(red), "convnetvae_")
  expect_identical(SeuratObject::DefaultAssay(red), "ATAC")
  expect_true(all(is.finite(emb)))
  expect_gt(sd(emb[, 1]), 0)
  misc <- SeuratObject::Misc(red)
  expect_setequal(names(misc), c("config", "history", "bins", "model.dir", "assays", "group.by.vars"))
  expect_length(misc$bins, misc$config$n_bins)
  # in the object's naming style (Signac: chr1-1-10000, 1-based)
  expect_match(misc$bins[1], "^chr1-[0-9]+-[0-9]+$")
  expect_true(all(misc$bins %in% rownames(obj[["ATAC"]])))
  expect_identical(misc$assays, modalities)
  expect_identical(misc$group.by.vars, "batch")
  expect_equal(misc$config$architecture, "conv-k11s11")
  expect_equal(misc$config$n_latent, 8)
  expect_equal(misc$config$n_cells, 300)
  expect_equal(unlist(misc$config$modalities), modalities)
  expect_equal(unlist(misc$config$batch_categories), c("batch1", "batch2"))
  expect_lte(misc$config$n_bins, 2000)
  expect_s3_class(misc$history, "data.frame")
  expect_equal(nrow(misc$history), 2L)
  expect_true(all(c("epoch", "train_loss") %in% colnames(misc$history)))
  expect_true(file.exists(file.path(model_dir, "config.json")))
  # command log
  expect_true("RunConvNetVAE" %in% SeuratObject::Command(out))
  cmd <- out@commands[["RunConvNetVAE"]]
  expect_identical(cmd@params$assays, modalities)
  expect_identical(cmd@params$reduction.key, "convnetvae_")
  # nothing else changed
  expect_identical(out[[]], obj[[]])
  expect_identical(SeuratObject::Assays(out), SeuratObject::Assays(obj))
  expect_identical(
    SeuratObject::GetAssayData(out, assay = "H3K27me3", slot = "counts"),
    SeuratObject::GetAssayData(obj, assay = "H3K27me3", slot = "counts")
  )

  # ProjectConvNetVAE: the same cells give the same embedding
  proj <- ProjectConvNetVAE(obj, model.dir = model_dir, verbose = FALSE)
  pemb <- SeuratObject::Embeddings(proj, "convnetvae.projected")
  expect_identical(rownames(pemb), colnames(obj))
  expect_equal(unname(pemb), unname(emb), tolerance = 1e-6)
  expect_true("ProjectConvNetVAE" %in% SeuratObject::Command(proj))

  # a subset of the cells in another order projects to the same rows
  sub <- obj[, rev(colnames(obj))[1:50]]
  semb <- SeuratObject::Embeddings(ProjectConvNetVAE(sub, model.dir = model_dir, verbose = FALSE),
    "convnetvae.projected")
  expect_equal(unname(semb), unname(emb[rownames(semb), ]), tolerance = 1e-5)
})

test_that("custom reduction name and key, no batch, and the same seed gives the same result", {
  skip_if_no_python_core()
  obj <- example_object()
  a <- RunConvNetVAE(obj,
    assays = modalities[1:2], architecture = "conv-k11s11", n.latent = 4, max.epochs = 1,
    verbose = FALSE, validation.size = 0, reduction.name = "cnv", reduction.key = "CNV_",
    n.bins = 500, seed = 7
  )
  emb <- SeuratObject::Embeddings(a, "cnv")
  expect_identical(colnames(emb), paste0("CNV_", 1:4))
  cfg <- SeuratObject::Misc(a[["cnv"]])$config
  expect_equal(cfg$n_bins, 500)
  expect_null(cfg$batch_key)
  b <- RunConvNetVAE(obj,
    assays = modalities[1:2], architecture = "conv-k11s11", n.latent = 4, max.epochs = 1,
    verbose = FALSE, validation.size = 0, reduction.name = "cnv", reduction.key = "CNV_",
    n.bins = 500, seed = 7
  )
  expect_equal(SeuratObject::Embeddings(b, "cnv"), emb)
})

test_that("errors from Python arrive as R conditions with the Python message", {
  skip_if_no_python_core()
  obj <- example_object()
  before <- obj
  expect_error(
    RunConvNetVAE(obj, assays = modalities, verbose = FALSE, no.such.argument = 1),
    "ConvNetVAE \\(Python\\): unknown argument 'no.such.argument'",
    class = "convnetvae_python_error"
  )
  expect_error(
    RunConvNetVAE(obj, assays = modalities, verbose = FALSE, architecture = "conv-banana"),
    "ConvNetVAE \\(Python\\):.*conv-banana",
    class = "convnetvae_python_error"
  )
  expect_identical(obj, before)
  expect_length(SeuratObject::Reductions(obj), 0L)
})

test_that("an error after training (model.dir not usable) leaves no half-added reduction", {
  skip_if_no_python_core()
  obj <- example_object()
  before <- obj
  foreign <- file.path(tempdir(), "someone-elses-dir")
  dir.create(foreign, showWarnings = FALSE)
  writeLines("keep me", file.path(foreign, "notes.txt"))
  expect_error(
    RunConvNetVAE(obj,
      assays = modalities[1:2], architecture = "conv-k11s11", n.latent = 4, max.epochs = 1,
      n.bins = 300, verbose = FALSE, validation.size = 0, model.dir = foreign
    ),
    "holds no ConvNetVAE model",
    class = "convnetvae_python_error"
  )
  expect_identical(obj, before)
  expect_length(SeuratObject::Reductions(obj), 0L)
  expect_identical(readLines(file.path(foreign, "notes.txt")), "keep me")
})

test_that("ProjectConvNetVAE stops clearly on a missing model directory", {
  skip_if_no_python_core()
  obj <- example_object()
  expect_error(
    ProjectConvNetVAE(obj, model.dir = file.path(tempdir(), "no-such-model")),
    "`model.dir` must be the directory of a saved model"
  )
  empty <- file.path(tempdir(), "empty-model-dir")
  dir.create(empty, showWarnings = FALSE)
  expect_error(
    ProjectConvNetVAE(obj, model.dir = empty),
    "is not a saved ConvNetVAE model",
    class = "convnetvae_python_error"
  )
})
