# Python discovery: loading never starts Python; a missing core gives a message saying what to
# run; the input object is unchanged. Each case runs in a fresh R process (Python can start only
# once per process).

test_that("loading the package never starts Python", {
  res <- run_r_subprocess(c(
    "library(ConvNetVAE)",
    "obj <- readRDS(convnetvae_example())",
    "cat('PY', reticulate::py_available(initialize = FALSE), '\\n')"
  ))
  expect_equal(res$status, 0L, info = res$output)
  expect_match(res$output, "PY FALSE")
})

test_that("a configured Python that does not exist stops with what to run", {
  res <- run_r_subprocess(c(
    "library(ConvNetVAE)",
    "obj <- readRDS(convnetvae_example()); before <- obj",
    "e <- tryCatch(RunConvNetVAE(obj, assays = c('ATAC', 'H3K27ac'), verbose = FALSE),",
    "  error = function(e) e)",
    "cat('CLASS', class(e)[1], '\\n'); cat(conditionMessage(e), '\\n')",
    "cat('UNCHANGED', identical(obj, before), '\\n')",
    "cat('NOREDUCTION', length(SeuratObject::Reductions(obj)) == 0, '\\n')"
  ), env = c("CONVNETVAE_PYTHON=/nonexistent/bin/python", "RETICULATE_PYTHON="))
  expect_equal(res$status, 0L, info = res$output)
  expect_match(res$output, "CLASS convnetvae_missing_python")
  expect_match(res$output, "The Python core of ConvNetVAE was not found. Run ConvNetVAE::install_convnetvae()", fixed = TRUE)
  expect_match(res$output, "options(convnetvae.python = '/path/to/python')", fixed = TRUE)
  expect_match(res$output, "CONVNETVAE_PYTHON points at '/nonexistent/bin/python'", fixed = TRUE)
  expect_match(res$output, "UNCHANGED TRUE")
  expect_match(res$output, "NOREDUCTION TRUE")
})

test_that("a Python without the convnetvae package stops with what to run", {
  bare <- Sys.which("python3")
  skip_if(!nzchar(bare), "no python3 on PATH")
  skip_if(ConvNetVAE:::.python_imports(bare, "convnetvae"), "python3 on PATH has convnetvae")
  res <- run_r_subprocess(c(
    "library(ConvNetVAE)",
    sprintf("options(convnetvae.python = '%s')", bare),
    "cat('AVAILABLE', convnetvae_available(), '\\n')",
    "e <- tryCatch(RunConvNetVAE(list(A = Matrix::Matrix(1, 2, 1, dimnames = list(NULL, 'chr1-1-10')))),",
    "  error = function(e) e)",
    "cat(conditionMessage(e), '\\n')"
  ), env = c("CONVNETVAE_PYTHON=", "RETICULATE_PYTHON="))
  expect_equal(res$status, 0L, info = res$output)
  expect_match(res$output, "AVAILABLE FALSE")
  expect_match(res$output, "The Python core of ConvNetVAE was not found", fixed = TRUE)
  expect_match(res$output, "cannot import 'convnetvae.r.bridge'", fixed = TRUE)
})

test_that("nothing configured and no virtualenv stops with what to run", {
  res <- run_r_subprocess(c(
    "library(ConvNetVAE)",
    "options(convnetvae.envname = 'convnetvae-test-no-such-env', convnetvae.recorded.python = FALSE)",
    "cat('PYTHON', is.null(convnetvae_python()), '\\n')",
    "e <- tryCatch(ProjectConvNetVAE(list(), model.dir = tempdir()), error = function(e) e)",
    "cat(conditionMessage(e), '\\n')"
  ), env = c("CONVNETVAE_PYTHON=", "RETICULATE_PYTHON="))
  expect_equal(res$status, 0L, info = res$output)
  expect_match(res$output, "PYTHON TRUE")
  expect_match(res$output, "virtualenv 'convnetvae-test-no-such-env' does not exist", fixed = TRUE)
})

test_that("the discovery order is option, CONVNETVAE_PYTHON, RETICULATE_PYTHON", {
  withr::local_envvar(CONVNETVAE_PYTHON = "/b/python", RETICULATE_PYTHON = "/c/python")
  withr::local_options(convnetvae.python = "/a/python")
  expect_equal(convnetvae_python(), c(option = "/a/python"))
  withr::local_options(convnetvae.python = NULL)
  expect_equal(convnetvae_python(), c(CONVNETVAE_PYTHON = "/b/python"))
  withr::local_envvar(CONVNETVAE_PYTHON = "")
  expect_equal(convnetvae_python(), c(RETICULATE_PYTHON = "/c/python"))
})

test_that("install_convnetvae() reuses an environment that already has the core", {
  py <- Sys.getenv("CONVNETVAE_PYTHON")
  skip_if(!nzchar(py) || !file.exists(py), "CONVNETVAE_PYTHON not set")
  env <- dirname(dirname(py))
  skip_if_not(reticulate::virtualenv_exists(env), "CONVNETVAE_PYTHON is not in a virtualenv")
  skip_if_not(ConvNetVAE:::.python_imports(py, "convnetvae.r.bridge"), "no convnetvae in that env")
  expect_message(out <- install_convnetvae(envname = env), "reusing the virtualenv")
  expect_equal(normalizePath(out), normalizePath(reticulate::virtualenv_python(env)))
  expect_error(install_convnetvae(envname = ""), "`envname` must be")
})

test_that("install_convnetvae() creates a virtualenv and installs the core (slow, opt-in)", {
  skip_if_not(
    identical(Sys.getenv("CONVNETVAE_TEST_INSTALL"), "true"),
    "set CONVNETVAE_TEST_INSTALL=true, CONVNETVAE_SOURCE=<repo> (and CONVNETVAE_INSTALL_PYTHON=<base python>) to run"
  )
  src <- Sys.getenv("CONVNETVAE_SOURCE")
  base <- Sys.getenv("CONVNETVAE_INSTALL_PYTHON")
  env <- file.path(tempdir(), "convnetvae-install-test")
  py <- install_convnetvae(
    envname = env, packages = c("torch==2.13.0", src),
    python = if (nzchar(base)) base else NULL
  )
  expect_true(ConvNetVAE:::.python_imports(py, "convnetvae.r.bridge"))
  # a second call reuses it
  expect_message(install_convnetvae(envname = env), "reusing the virtualenv")
})
