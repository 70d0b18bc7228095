# The Python core runs inside R: torch's matrix products use the BLAS R has loaded.

test_that("the reference BLAS is recognised and warned about once per session", {
  ref <- "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0"
  fast <- "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"
  expect_true(ConvNetVAE:::.slow_blas(ref))
  expect_false(ConvNetVAE:::.slow_blas(fast))
  expect_false(ConvNetVAE:::.slow_blas(NULL))
  state <- ConvNetVAE:::.convnetvae_state
  old <- state$blas_checked
  on.exit(state$blas_checked <- old)
  state$blas_checked <- FALSE
  expect_warning(ConvNetVAE:::.warn_slow_blas(ref), "libopenblas0-pthread")
  expect_silent(ConvNetVAE:::.warn_slow_blas(ref)) # once per session
  state$blas_checked <- FALSE
  expect_silent(ConvNetVAE:::.warn_slow_blas(fast))
})

test_that("this machine's R uses an optimised BLAS (make setup installs OpenBLAS)", {
  skip_on_os(c("windows", "mac"))
  skip_if(Sys.getenv("CONVNETVAE_ALLOW_REFERENCE_BLAS") == "1")
  expect_false(ConvNetVAE:::.slow_blas(), info = utils::sessionInfo()$BLAS)
})
