# After `make setup`, library(ConvNetVAE) works in a plain R session and finds the project's
# Python without environment variables (issue 17, item 0).

# Rscript in a clean environment: no R_LIBS, CONVNETVAE_PYTHON or RETICULATE_PYTHON (only PATH,
# HOME, the locale and the thread count), in a fresh temporary working directory.
run_clean_rscript <- function(code) {
  dir <- tempfile("clean-r-")
  dir.create(dir)
  script <- file.path(dir, "script.R")
  writeLines(code, script)
  keep <- c(
    PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME = Sys.getenv("HOME"), LANG = Sys.getenv("LANG", "C.UTF-8"),
    OMP_NUM_THREADS = Sys.getenv("OMP_NUM_THREADS", "2")
  )
  env <- paste0(names(keep), "=", keep)
  out <- suppressWarnings(system2("env",
    c("-i", shQuote(env), "sh", "-c", shQuote(paste0(
      "cd ", shQuote(dir), " && ", shQuote(file.path(R.home("bin"), "Rscript")), " script.R"
    ))),
    stdout = TRUE, stderr = TRUE
  ))
  status <- attr(out, "status")
  list(status = if (is.null(status)) 0L else status, output = paste(out, collapse = "\n"))
}

# The ConvNetVAE a plain R finds must be this checkout's build (make setup copies it there);
# another checkout's setup may have replaced it meanwhile.
# (testthat may load the package from the sources; the installed copy is found in .libPaths())
installed_file <- function(name) {
  dir <- find.package("ConvNetVAE", lib.loc = .libPaths(), quiet = TRUE)
  path <- file.path(dir, name)
  if (length(dir) == 1L && file.exists(path)) path else ""
}

skip_unless_setup_installed_this_build <- function() {
  ours <- installed_file("installed-from")
  skip_if(!nzchar(ours), "this ConvNetVAE was not installed by make setup")
  skip_if(identical(Sys.getenv("CONVNETVAE_R_LIBRARY"), "none"), "CONVNETVAE_R_LIBRARY=none")
  res <- run_clean_rscript(
    "cat('FOUND', system.file('installed-from', package = 'ConvNetVAE'), '\\n')"
  )
  found <- sub(".*FOUND ([^ ]*) .*", "\\1", res$output)
  expect_true(nzchar(found) && file.exists(found),
    label = paste("a plain R session finds ConvNetVAE:", res$output)
  )
  skip_if(!identical(readLines(found), readLines(ours)), paste(
    "the ConvNetVAE in the site/user library was installed from another checkout:",
    readLines(found)
  ))
}

test_that("the installed package records the project's Python, used after option and env vars", {
  recorded <- installed_file("python-path")
  skip_if(!nzchar(recorded), "this ConvNetVAE was not installed by make setup")
  py <- readLines(recorded)
  expect_true(file.exists(py))
  code <- c(
    "library(ConvNetVAE)",
    "py <- convnetvae_python(); cat('PY', names(py), py, '\\n')",
    "options(convnetvae.recorded.python = FALSE)",
    "cat('OFF', is.null(convnetvae_python()) || names(convnetvae_python()) != 'recorded', '\\n')"
  )
  res <- run_r_subprocess(code, env = c("CONVNETVAE_PYTHON=", "RETICULATE_PYTHON="))
  expect_equal(res$status, 0L, info = res$output)
  expect_match(res$output, paste("PY recorded", py), fixed = TRUE)
  expect_match(res$output, "OFF TRUE")
  # the option and the environment variables come first
  res <- run_r_subprocess(code, env = c("CONVNETVAE_PYTHON=/b/python", "RETICULATE_PYTHON="))
  expect_match(res$output, "PY CONVNETVAE_PYTHON /b/python", fixed = TRUE)
})

test_that("README's R section runs in a fresh R session with no R_LIBS or Python variables", {
  readme <- test_path("..", "..", "README.md")
  skip_if_not(file.exists(readme), "README.md is not here (R CMD check)")
  skip_unless_setup_installed_this_build()
  lines <- readLines(readme)
  start <- grep("^## R ", lines)
  block <- lines[(start + 1L):length(lines)]
  from <- which(block == "```r")[1L]
  to <- which(block == "```")[1L]
  code <- block[(from + 1L):(to - 1L)]
  expect_true(any(grepl("library(ConvNetVAE)", code, fixed = TRUE)))
  res <- run_clean_rscript(c(
    "cat('SET', sum(nzchar(Sys.getenv(c('R_LIBS', 'CONVNETVAE_PYTHON', 'RETICULATE_PYTHON')))), '\\n')",
    code,
    "cat('PYTHON', names(convnetvae_python()), '\\n')",
    "cat('REDUCTIONS', SeuratObject::Reductions(obj), '\\n')"
  ))
  expect_equal(res$status, 0L, info = res$output)
  expect_match(res$output, "SET 0 ")
  expect_match(res$output, "PYTHON recorded")
  expect_match(res$output, "REDUCTIONS convnetvae umap")
})
