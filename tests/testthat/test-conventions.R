# R conventions (issue 17, items 3 and 4): the reduction works with Seurat's functions, messages
# and warnings are R conditions that name R's arguments, and a per-cell batch column is warned
# about.

tiny <- list(architecture = "conv-k11s11", n.latent = 4, max.epochs = 1, batch.size = 64,
  validation.size = 0)

run_tiny <- function(obj, ...) {
  do.call(RunConvNetVAE, utils::modifyList(c(list(obj, assays = modalities[1:2]), tiny), list(...)))
}

test_that("the reduction has stdev and loadings: ElbowPlot and print work", {
  skip_if_no_python_core()
  out <- run_tiny(example_object(), verbose = FALSE, n.latent = 5)
  red <- out[["convnetvae"]]
  sdev <- SeuratObject::Stdev(red)
  expect_equal(sdev, unname(apply(SeuratObject::Embeddings(red), 2, sd)))
  p <- Seurat::ElbowPlot(out, reduction = "convnetvae", ndims = 5)
  expect_s3_class(p, "ggplot")
  expect_equal(p$data$stdev, sdev)
  printed <- capture.output(print(red))
  expect_match(printed[1], "^convnetvae_ 1")
  expect_true(any(grepl("^Positive: ", printed)))
  expect_true(all(rownames(SeuratObject::Loadings(red)) %in% rownames(out[["ATAC"]])))
  expect_match(capture.output(methods::show(red))[1], "dimensional reduction object with key convnetvae_")
})

test_that("assays default to DefaultAssay(object), said in a message", {
  skip_if_no_python_core()
  obj <- example_object()
  SeuratObject::DefaultAssay(obj) <- "H3K27ac"
  msgs <- capture_messages(out <- do.call(RunConvNetVAE, c(list(obj), tiny)))
  expect_match(
    msgs[1],
    "using the default assay 'H3K27ac' \\(`assays` not given; available: 'ATAC', 'H3K27ac', 'H3K27me3'\\)"
  )
  expect_identical(SeuratObject::Misc(out[["convnetvae"]])$assays, "H3K27ac")
})

test_that("verbose = FALSE is silent, suppressMessages silences messages, progress is shown", {
  skip_if_no_python_core()
  obj <- example_object()
  expect_silent(run_tiny(obj, verbose = FALSE))
  expect_silent(suppressMessages(run_tiny(obj, verbose = TRUE)))
  msgs <- character()
  withCallingHandlers(
    run_tiny(obj, verbose = TRUE, max.epochs = 6, bin.size = 20000),
    message = function(m) {
      msgs <<- c(msgs, conditionMessage(m))
      invokeRestart("muffleMessage")
    }
  )
  msgs <- paste(msgs, collapse = "")
  # features are rebinned into windows: said so
  expect_match(msgs, "assay 'ATAC' has 2,000 10,000 bp bins; their counts are summed into the 20,000 bp windows")
  expect_match(msgs, "training conv-k11s11 \\([0-9,]+ parameters\\) on 300 cells x [0-9,]+ bins x 2 modalities")
  # the estimated run time, from the first minibatches, before the epochs
  expect_match(msgs, "estimated training time [0-9]+ (s|min).* for 6 epochs \\(about .* s per epoch from the first minibatches\\)")
  expect_lt(regexpr("estimated training time", msgs), regexpr("epoch 6/6", msgs))
  # an exiting handler gets the first message and ends the call cleanly
  first <- tryCatch(run_tiny(obj, verbose = TRUE), message = function(m) conditionMessage(m))
  expect_match(first, "^ConvNetVAE: ")
})

test_that("Python warnings arrive as R warnings that suppressWarnings and tryCatch see", {
  skip_if_no_python_core()
  obj <- example_object()
  counts <- SeuratObject::GetAssayData(obj, assay = "H3K27ac", slot = "counts")
  counts[, 1:3] <- 0 # three cells without H3K27ac counts: Python warns
  obj[["H3K27ac"]] <- SeuratObject::CreateAssayObject(counts = counts)
  w <- tryCatch(run_tiny(obj, verbose = FALSE), warning = function(w) w)
  expect_s3_class(w, "convnetvae_python_warning")
  expect_match(conditionMessage(w), "cells with zero counts in an observed modality: \\{'H3K27ac': 3\\}")
  expect_silent(suppressWarnings(run_tiny(obj, verbose = FALSE)))
  expect_warning(run_tiny(obj, verbose = FALSE), "zero counts", class = "convnetvae_python_warning")
})

test_that("errors from Python name R's arguments and say how to fix them", {
  skip_if_no_python_core()
  obj <- example_object()
  # bin.size (Python: bin_size)
  expect_error(
    run_tiny(obj, bin.size = 15000, verbose = FALSE),
    "10000 bp bins.*bin.size", class = "convnetvae_python_error"
  )
  # validation.size (Python: validation_size)
  small <- obj[, 1:3]
  expect_error(
    run_tiny(small, validation.size = 0.5, batch.size = 2, verbose = FALSE),
    "validation.size = 0", class = "convnetvae_python_error"
  )
  # too few bins for the architecture: one that fits is suggested
  expect_error(
    run_tiny(obj, architecture = "conv-k31s31", n.bins = 20, verbose = FALSE),
    "kernel 31 but the data has only 20 bins: use an architecture that fits 20 bins, e.g. architecture = \"conv-k11s11\".*bin.size.*n.bins = NULL",
    class = "convnetvae_python_error"
  )
})

test_that("model.dir is checked writable before training", {
  skip_if_no_python_core()
  obj <- example_object()
  file <- tempfile()
  writeLines("x", file)
  t0 <- Sys.time()
  expect_error(
    run_tiny(obj, model.dir = file.path(file, "model"), max.epochs = 50, verbose = FALSE),
    "model.dir '.*model' cannot be created: '.*' is a file", class = "convnetvae_python_error"
  )
  expect_error(
    run_tiny(obj, model.dir = file, verbose = FALSE),
    "model.dir '.*' is a file, not a directory", class = "convnetvae_python_error"
  )
  expect_lt(as.numeric(difftime(Sys.time(), t0, units = "secs")), 30) # 50 epochs not run
})

test_that("a group.by.vars with one cell per batch or too many batches is warned about", {
  meta <- data.frame(
    barcode = paste0("c", 1:100), sample = rep(c("a", "b"), 50),
    cluster = rep(paste0("k", 1:20), 5), odd = c(rep("a", 99), "b")
  )
  expect_warning(
    ConvNetVAE:::.batch_labels(meta, "barcode"),
    "`group.by.vars` \\('barcode'\\) gives 100 batches for 100 cells \\(one cell per batch\\)",
    class = "convnetvae_batch_warning"
  )
  expect_warning(
    ConvNetVAE:::.batch_labels(meta, "cluster"),
    "20 batches for 100 cells \\(more batches than a tenth of the cells\\)"
  )
  expect_warning(ConvNetVAE:::.batch_labels(meta, "odd"), "1 batch of a single cell")
  expect_silent(labels <- ConvNetVAE:::.batch_labels(meta, "sample"))
  expect_identical(attr(labels, "column"), "sample")
  both <- suppressWarnings(ConvNetVAE:::.batch_labels(meta, c("sample", "odd")))
  expect_identical(attr(both, "column"), "sample+odd")
  # the default method's vector of labels too
  expect_warning(ConvNetVAE:::.check_batch_sizes(paste0("c", 1:50), "`group.by.vars`"), "one cell per batch")
})
