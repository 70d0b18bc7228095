# The settings table (R/settings.R, generated from the Python schema) drives R's checks and must
# agree with the methods' formals.

settings <- ConvNetVAE:::.settings

test_that("the formals of every method take the schema's defaults", {
  run <- c("RunConvNetVAE.Seurat", "RunConvNetVAE.SingleCellExperiment", "RunConvNetVAE.default")
  for (fn in run) {
    fo <- formals(getFromNamespace(fn, "ConvNetVAE"))
    for (group in c("model", "train", "data")) {
      for (r_name in names(settings[[group]])) {
        s <- settings[[group]][[r_name]]
        expect_identical(r_name %in% names(fo), isTRUE(s$formal), info = paste(fn, r_name))
        if (r_name %in% names(fo)) {
          expect_equal(eval(fo[[r_name]]), s$default, info = paste(fn, r_name))
        }
      }
    }
  }
  expect_equal(formals(ConvNetVAE:::RunConvNetVAE.Seurat)$seed, 0)
})

test_that(".check_setting applies the schema's types, bounds and choices", {
  chk <- ConvNetVAE:::.check_setting
  expect_identical(chk(30, "n.latent", "model"), 30L)
  expect_identical(chk(1e-3, "learning.rate", "train"), 1e-3)
  expect_null(chk(NULL, "n.bins", "data"))
  expect_error(chk(0, "n.latent", "model"), "`n.latent` must be a whole number >= 1",
    class = "convnetvae_input_error"
  )
  expect_error(chk(2.5, "max.epochs", "train"), "whole number")
  expect_error(chk(0, "learning.rate", "train"), "`learning.rate` must be a number > 0")
  expect_error(chk(1, "dropout", "model"), ">= 0 and < 1")
  expect_error(chk("zinb", "likelihood", "model"), "one of 'poisson', 'nb'")
  expect_error(chk(c(1, 2), "seed", "model"), "`seed` must be")
  expect_error(chk(NA, "early.stopping", "train"), "TRUE or FALSE")
  expect_error(chk(NULL, "patience", "train"), "got NULL")
  expect_null(chk(NULL, "batch.size", "train")) # chosen from the data
  expect_identical(chk(4, "time.budget", "train"), 4)
  expect_error(chk(0, "time.budget", "train"), "`time.budget` must be a number > 0")
  expect_identical(chk("zero", "loadings.start", "model"), "zero")
  expect_error(chk("pca", "loadings.start", "model"), "one of 'zero', 'lsi', 'auto'")
})

test_that("arguments passed through ... are renamed and checked", {
  dots <- ConvNetVAE:::.dots_config
  expect_identical(
    dots(list(validation.size = 0, patience = 3, no.such = 1)),
    list(validation_size = 0, patience = 3L, no_such = 1)
  )
  expect_identical(dots(list(batch.size = 256), "embed"), list(batch_size = 256L))
  expect_identical(dots(list(time.budget = 4)), list(time_budget = 4))
  expect_identical(dots(list(time.guard = FALSE)), list(time_guard = FALSE))
  expect_error(dots(list(time.guard = NA)), "`time.guard` must be TRUE or FALSE")
  expect_identical(dots(list(loadings.start = "lsi")), list(loadings_start = "lsi"))
  expect_identical(dots(list(tie.loadings = TRUE)), list(tie_loadings = TRUE))
  expect_error(dots(list(tie.loadings = "yes")), "`tie.loadings` must be TRUE or FALSE or NULL")
  expect_error(dots(list(patience = 0)), "`patience` must be a whole number >= 1")
  expect_error(dots(list(1)), "must be named")
})
