# New samples onto a saved model (issue 17, item 2): ProjectConvNetVAE(adapt = TRUE). The
# acceptance test of the method itself (label transfer, mixing) is tests/python/test_query.py.

test_that("cells of a new batch are a clear error naming adapt, and adapt = TRUE maps them", {
  skip_if_no_python_core()
  obj <- example_object()
  model_dir <- file.path(tempdir(), "adapt-model")
  # the reference: batch1's cells in two samples
  ref2 <- obj
  ref2$sample <- ifelse(seq_len(ncol(obj)) %% 2 == 0, "s1", "s2")
  ref2 <- ref2[, ref2$batch == "batch1"]
  unlink(model_dir, recursive = TRUE)
  ref2 <- do.call(RunConvNetVAE, c(
    list(ref2, assays = modalities, group.by.vars = "sample", model.dir = model_dir), fast_args
  ))
  z_ref <- SeuratObject::Embeddings(ref2, "convnetvae")
  query <- obj[, obj$batch == "batch2"]
  query$sample <- "new_sample"
  before <- query
  expect_error(
    ProjectConvNetVAE(query, model.dir = model_dir, verbose = FALSE),
    "batch labels \\['new_sample'\\] in the group.by.vars column 'sample' were not seen.*use adapt = TRUE",
    class = "convnetvae_python_error"
  )
  saved <- tools::md5sum(list.files(model_dir, full.names = TRUE))
  msgs <- capture_messages(
    out <- ProjectConvNetVAE(query, model.dir = model_dir, adapt = TRUE, max.epochs = 3,
      batch.size = 32)
  )
  expect_match(
    paste(msgs, collapse = ""),
    "adapting the model to the new batches \\['new_sample'\\]: training only their [0-9,]+ parameters"
  )
  expect_identical(query, before)
  emb <- SeuratObject::Embeddings(out, "convnetvae.projected")
  expect_equal(dim(emb), c(ncol(query), 8L))
  expect_true(all(is.finite(emb)))
  misc <- SeuratObject::Misc(out[["convnetvae.projected"]])
  expect_true(misc$adapt)
  expect_equal(unlist(misc$config$query$query_batches), "new_sample")
  expect_equal(nrow(misc$history), 3L)
  # the saved model is unchanged, and the reference's cells still project to their embedding
  expect_identical(tools::md5sum(list.files(model_dir, full.names = TRUE)), saved)
  again <- ProjectConvNetVAE(ref2, model.dir = model_dir, verbose = FALSE)
  expect_equal(unname(SeuratObject::Embeddings(again, "convnetvae.projected")), unname(z_ref),
    tolerance = 1e-5)
  # adapt = TRUE with only known batches is a plain projection
  known <- ProjectConvNetVAE(ref2, model.dir = model_dir, adapt = TRUE, verbose = FALSE)
  expect_equal(unname(SeuratObject::Embeddings(known, "convnetvae.projected")), unname(z_ref),
    tolerance = 1e-5)
  expect_error(ProjectConvNetVAE(query, model.dir = model_dir, adapt = NA), "`adapt` must be")
})
