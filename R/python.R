# Finding, checking and calling the Python core.
#
# Loading the package never starts Python: nothing here runs at load time. The first function that
# needs Python resolves an interpreter (option, environment variables, then the virtualenv made by
# install_convnetvae()), binds reticulate to it and imports convnetvae.r.bridge.

.convnetvae_state <- new.env(parent = emptyenv())

.missing_python_message <- function(detail = NULL) {
  msg <- paste0(
    "The Python core of ConvNetVAE was not found. Run ConvNetVAE::install_convnetvae() ",
    "or set options(convnetvae.python = '/path/to/python')."
  )
  if (!is.null(detail) && nzchar(detail)) {
    msg <- paste0(msg, "\n", detail)
  }
  msg
}

.stop_missing_python <- function(detail = NULL) {
  cond <- structure(
    class = c("convnetvae_missing_python", "error", "condition"),
    list(message = .missing_python_message(detail), call = NULL)
  )
  stop(cond)
}

#' Default name of the virtualenv made by install_convnetvae()
#' @noRd
.default_envname <- function() {
  getOption("convnetvae.envname", "r-convnetvae")
}

#' Locate the Python interpreter of the ConvNetVAE core
#'
#' Looks, in this order, at \code{getOption("convnetvae.python")}, the environment
#' variables \code{CONVNETVAE_PYTHON} and \code{RETICULATE_PYTHON}, the Python
#' recorded when the package was installed from a source checkout (\code{make
#' setup} writes the path of the checkout's \code{.venv} into the installed
#' package), then the virtualenv made by \code{\link{install_convnetvae}()}. The
#' first one that is set is used: a setting that points at a missing file is an
#' error rather than silently skipped (a recorded Python that no longer exists is
#' skipped). \code{options(convnetvae.recorded.python = FALSE)} ignores the
#' recorded Python.
#'
#' @return A named character string: the path to the Python executable, named by
#'   where it came from (\code{"option"}, \code{"CONVNETVAE_PYTHON"},
#'   \code{"RETICULATE_PYTHON"}, \code{"recorded"} or \code{"virtualenv"}), or
#'   \code{NULL} when nothing is configured.
#' @examples
#' convnetvae_python()
#' @export
convnetvae_python <- function() {
  candidates <- c(
    option = getOption("convnetvae.python", ""),
    CONVNETVAE_PYTHON = Sys.getenv("CONVNETVAE_PYTHON", ""),
    RETICULATE_PYTHON = Sys.getenv("RETICULATE_PYTHON", "")
  )
  candidates <- candidates[!is.na(candidates) & nzchar(candidates)]
  if (length(candidates) > 0L) {
    return(candidates[1L])
  }
  recorded <- .recorded_python()
  if (!is.null(recorded)) {
    return(c(recorded = recorded))
  }
  envname <- .default_envname()
  if (reticulate::virtualenv_exists(envname)) {
    return(c(virtualenv = reticulate::virtualenv_python(envname)))
  }
  NULL
}

#' The Python recorded at install time (the file python-path in the installed package, written
#' by scripts/setup.sh), or NULL when there is none, it is disabled or the file it names is gone
#' @noRd
.recorded_python <- function() {
  if (isFALSE(getOption("convnetvae.recorded.python", TRUE))) {
    return(NULL)
  }
  file <- system.file("python-path", package = "ConvNetVAE")
  if (!nzchar(file)) {
    return(NULL)
  }
  path <- trimws(readLines(file, n = 1L, warn = FALSE))
  if (length(path) == 0L || !nzchar(path) || !file.exists(path)) {
    return(NULL)
  }
  path
}

.describe_source <- function(source) {
  switch(source,
    option = "options(convnetvae.python)",
    CONVNETVAE_PYTHON = "the environment variable CONVNETVAE_PYTHON",
    RETICULATE_PYTHON = "the environment variable RETICULATE_PYTHON",
    recorded = "the Python recorded when ConvNetVAE was installed (make setup)",
    virtualenv = paste0("the virtualenv '", .default_envname(), "'"),
    source
  )
}

#' Is the Python core of ConvNetVAE usable?
#'
#' Resolves the Python interpreter (see \code{\link{convnetvae_python}}) and checks
#' that the \code{convnetvae} Python package can be imported from it. This starts
#' Python in the R session.
#'
#' @return \code{TRUE} or \code{FALSE}; never an error.
#' @examples
#' \dontrun{
#' convnetvae_available()
#' }
#' @export
convnetvae_available <- function() {
  ok <- tryCatch(
    {
      .bridge()
      TRUE
    },
    error = function(e) FALSE
  )
  ok
}

#' Bind reticulate to the configured Python and import the bridge module (cached)
#' @noRd
.bridge <- function(module = "convnetvae.r.bridge") {
  cached <- .convnetvae_state[[module]]
  if (!is.null(cached)) {
    return(cached)
  }
  python <- convnetvae_python()
  if (reticulate::py_available(initialize = FALSE)) {
    # Python already runs in this session (reticulate cannot switch interpreters): use it.
    current <- reticulate::py_config()$python
    if (!is.null(python) && file.exists(python) &&
      normalizePath(python, mustWork = FALSE) != normalizePath(current, mustWork = FALSE)) {
      message(
        "ConvNetVAE: Python is already running in this R session (", current, "); using it ",
        "instead of ", python, " from ", .describe_source(names(python)), "."
      )
    }
    python <- c(running = current)
  } else {
    if (is.null(python)) {
      .stop_missing_python(paste0(
        "No Python is configured and the virtualenv '", .default_envname(), "' does not exist."
      ))
    }
    if (!file.exists(python)) {
      .stop_missing_python(paste0(
        .describe_source(names(python)), " points at '", python, "', which does not exist."
      ))
    }
    ok <- tryCatch(
      {
        .quiet_poetry(reticulate::use_python(python, required = TRUE))
        TRUE
      },
      error = function(e) conditionMessage(e)
    )
    if (!isTRUE(ok)) {
      .stop_missing_python(paste0(
        "reticulate could not use '", python, "' (", .describe_source(names(python)), "): ", ok
      ))
    }
  }
  available <- tryCatch(.quiet_poetry(reticulate::py_module_available(module)),
    error = function(e) FALSE
  )
  if (!isTRUE(available)) {
    .stop_missing_python(paste0(
      "The Python at '", python, "' cannot import '", module, "'."
    ))
  }
  mod <- .py_call(reticulate::import(module, convert = FALSE))
  assign(module, mod, envir = .convnetvae_state)
  .warn_slow_blas()
  mod
}

#' Is R using the reference BLAS (Debian's libblas3)?
#'
#' The Python core runs inside this R process, so torch's matrix products resolve to the BLAS R
#' has loaded; the reference BLAS makes training about ten times slower than in Python.
#' @param blas Path of R's BLAS library (`sessionInfo()$BLAS`).
#' @noRd
.slow_blas <- function(blas = utils::sessionInfo()$BLAS) {
  is.character(blas) && length(blas) == 1L && grepl("/blas/libblas\\.so", blas)
}

#' Warn once per session when R's BLAS would slow the Python core down
#' @noRd
.warn_slow_blas <- function(blas = utils::sessionInfo()$BLAS) {
  if (!isTRUE(.convnetvae_state$blas_checked) && .slow_blas(blas)) {
    warning(
      "R uses the reference BLAS (", blas, "); the Python core runs inside R and its matrix ",
      "products use it too, so training is about 10x slower than from Python. Install an ",
      "optimised BLAS (Debian/Ubuntu: apt-get install libopenblas0-pthread) and restart R.",
      call. = FALSE
    )
  }
  .convnetvae_state$blas_checked <- TRUE
  invisible(NULL)
}

#' reticulate 1.28 warns about Poetry whenever the working directory holds a pyproject.toml (as
#' the source repository does), although the interpreter is chosen explicitly here.
#' @noRd
.quiet_poetry <- function(expr) {
  withCallingHandlers(expr, warning = function(w) {
    if (grepl("Poetry", conditionMessage(w), fixed = TRUE)) invokeRestart("muffleWarning")
  })
}

#' Call Python and turn a Python exception into an R condition with the Python message
#' @noRd
.py_call <- function(expr) {
  tryCatch(expr, error = function(e) {
    if (inherits(e, "convnetvae_error") || inherits(e, "convnetvae_missing_python")) {
      stop(e)
    }
    msg <- conditionMessage(e)
    # reticulate appends the traceback after the Python message; keep the message itself.
    msg <- sub("\n*Detailed traceback:.*$", "", msg)
    msg <- sub("\n+$", "", msg)
    msg <- sub("^(convnetvae\\.errors\\.)?ConvNetVAEError: ", "", msg)
    stop(structure(
      class = c("convnetvae_python_error", "convnetvae_error", "error", "condition"),
      list(message = paste0("ConvNetVAE (Python): ", msg), call = NULL)
    ))
  })
}

#' Install the Python core of ConvNetVAE into a virtualenv
#'
#' Creates (or reuses) a Python virtualenv with reticulate and installs the
#' \code{convnetvae} Python package into it. An existing environment in which
#' \code{convnetvae} can already be imported is reused without installing
#' anything unless \code{force = TRUE}.
#'
#' @param envname Name of (or path to) the virtualenv. Defaults to
#'   \code{getOption("convnetvae.envname", "r-convnetvae")}, which is where
#'   \code{\link{convnetvae_python}()} looks.
#' @param packages What pip installs: by default the \code{convnetvae} package
#'   pinned with the CPU build of torch. Pass a local path (for example a
#'   checkout of the repository) or a wheel to install from there.
#' @param python The Python (>= 3.11) used to create the virtualenv;
#'   \code{NULL} lets reticulate choose.
#' @param force Reinstall even if the environment already imports
#'   \code{convnetvae}.
#' @param ... Passed to \code{reticulate::virtualenv_install()}.
#' @return The path to the environment's Python executable, invisibly.
#' @examples
#' \dontrun{
#' install_convnetvae()
#' install_convnetvae(packages = "/path/to/convnetvae/checkout")
#' }
#' @export
install_convnetvae <- function(envname = .default_envname(),
                               packages = c("torch==2.13.0", "convnetvae"),
                               python = NULL, force = FALSE, ...) {
  if (!is.character(envname) || length(envname) != 1L || !nzchar(envname)) {
    stop("`envname` must be a single non-empty string (a virtualenv name or path).", call. = FALSE)
  }
  if (reticulate::virtualenv_exists(envname)) {
    py <- reticulate::virtualenv_python(envname)
    if (!force && .python_imports(py, "convnetvae.r.bridge")) {
      message("ConvNetVAE: reusing the virtualenv '", envname, "' (", py, ").")
      return(invisible(py))
    }
  } else {
    message("ConvNetVAE: creating the virtualenv '", envname, "'.")
    .quiet_poetry(reticulate::virtualenv_create(envname, python = python))
    py <- reticulate::virtualenv_python(envname)
  }
  message("ConvNetVAE: installing ", paste(packages, collapse = ", "), " into '", envname, "'.")
  .quiet_poetry(
    reticulate::virtualenv_install(envname, packages = packages, ignore_installed = force, ...)
  )
  if (!.python_imports(py, "convnetvae.r.bridge")) {
    stop("Installing into '", envname, "' finished but '", py,
      "' still cannot import convnetvae; see the pip output above.",
      call. = FALSE
    )
  }
  message(
    "ConvNetVAE: done. Restart R if Python was already running, or set ",
    "options(convnetvae.python = '", py, "')."
  )
  invisible(py)
}

#' Can this Python import a module? Runs a separate process, so it works before and after
#' reticulate has started Python in this session.
#' @noRd
.python_imports <- function(python, module) {
  if (is.null(python) || !file.exists(python)) {
    return(FALSE)
  }
  status <- suppressWarnings(system2(python, c("-c", shQuote(paste0("import ", module))),
    stdout = FALSE, stderr = FALSE
  ))
  identical(as.integer(status), 0L)
}
