# Input checks that run in R before Python is touched, and the conversion of sparse matrices
# into plain bytes for Python.

.stop_input <- function(...) {
  stop(structure(
    class = c("convnetvae_input_error", "convnetvae_error", "error", "condition"),
    list(message = paste0(...), call = NULL)
  ))
}

#' Feature-name forms, tried in this order for each name (as Python's parse_bin_names does):
#' SnapATAC2 chr1:0-10000 and chr1_0_10000 are 0-based half-open, Signac chr1-1-10000 is 1-based
#' closed (its start is shifted down by one).
#' @noRd
.bin_name_patterns <- list(
  snapatac = list(pattern = "^(.+):([0-9]+)-([0-9]+)$", shift = 0),
  signac = list(pattern = "^(.+)-([0-9]+)-([0-9]+)$", shift = 1),
  underscore = list(pattern = "^(.+)_([0-9]+)_([0-9]+)$", shift = 0)
)

#' Parse genomic-range feature names (Signac chr1-1-10000, SnapATAC2 chr1:0-10000, chr1_0_10000)
#'
#' The rules are Python's (convnetvae.data.bins.parse_bin_names); tests/testthat/feature_bins.tsv
#' holds the cases both are tested on.
#' @return data.frame(chrom, start, end, ok) with 0-based half-open coordinates; rows that are
#'   not valid ranges (no form matches, start < 0 or end <= start) have ok = FALSE.
#' @noRd
.parse_ranges <- function(x) {
  x <- as.character(x)
  chrom <- rep(NA_character_, length(x))
  start <- rep(NA_real_, length(x))
  end <- rep(NA_real_, length(x))
  done <- rep(FALSE, length(x))
  for (form in .bin_name_patterns) {
    todo <- which(!done)
    if (length(todo) == 0L) {
      break
    }
    # grepl and sub are vectorised in C: regmatches(regexec()) took 1.4 s per 50,000 names
    hit <- grepl(form$pattern, x[todo])
    if (any(hit)) {
      rows <- todo[hit]
      chrom[rows] <- sub(form$pattern, "\\1", x[rows])
      start[rows] <- as.numeric(sub(form$pattern, "\\2", x[rows])) - form$shift
      end[rows] <- as.numeric(sub(form$pattern, "\\3", x[rows]))
      done[rows] <- TRUE
    }
  }
  bad <- !done | is.na(start) | is.na(end) | start < 0 | end <= start
  data.frame(chrom = chrom, start = start, end = end, ok = !bad, stringsAsFactors = FALSE)
}

#' Index of the bin.size window of each feature: the window holding its midpoint
#' floor((start + end) / 2), Python's rule (convnetvae.data.bins.feature_windows)
#' @noRd
.feature_windows <- function(r, bin.size) {
  floor(floor((r$start + r$end) / 2) / bin.size)
}

#' The naming form ("signac", "snapatac" or "underscore") of the first feature name
#' @noRd
.name_style <- function(features) {
  for (style in names(.bin_name_patterns)) {
    if (grepl(.bin_name_patterns[[style]]$pattern, features[1L])) {
      return(style)
    }
  }
  "snapatac"
}

#' Bin names in a naming form: the inverse of .parse_ranges (0-based half-open coordinates in)
#' @noRd
.format_ranges <- function(r, style) {
  num <- function(x) format(x, scientific = FALSE, trim = TRUE)
  switch(style,
    signac = paste0(r$chrom, "-", num(r$start + 1), "-", num(r$end)),
    underscore = paste0(r$chrom, "_", num(r$start), "_", num(r$end)),
    paste0(r$chrom, ":", num(r$start), "-", num(r$end))
  )
}

#' Say, for each assay whose features are not bin.size windows (peaks, other bin sizes), that
#' their counts are summed into windows
#' @noRd
.rebin_notes <- function(ranges, bin.size) {
  for (a in names(ranges)) {
    r <- ranges[[a]]
    width <- r$end - r$start
    if (all(r$start %% bin.size == 0 & width <= bin.size)) {
      next
    }
    n_windows <- length(unique(paste(r$chrom, .feature_windows(r, bin.size))))
    what <- if (length(unique(width)) == 1L) {
      paste0(format(width[1L], big.mark = ",", scientific = FALSE), " bp bins")
    } else {
      paste0(
        "features of ", format(min(width), big.mark = ",", scientific = FALSE), "-",
        format(max(width), big.mark = ",", scientific = FALSE), " bp (peaks)"
      )
    }
    message(
      "ConvNetVAE: assay '", a, "' has ", format(nrow(r), big.mark = ","), " ", what,
      "; their counts are summed into the ", format(bin.size, big.mark = ",", scientific = FALSE),
      " bp windows (bin.size) holding their midpoints: ", format(n_windows, big.mark = ","),
      " windows."
    )
  }
  invisible(TRUE)
}

.check_ranges <- function(features, assay) {
  if (length(features) == 0L) {
    .stop_input("Assay '", assay, "' has no features.")
  }
  r <- .parse_ranges(features)
  if (!all(r$ok)) {
    bad <- features[!r$ok]
    .stop_input(
      "The features of assay '", assay, "' are not genomic ranges: ", sum(!r$ok), " of ",
      length(features), " names do not parse (e.g. ",
      paste0("'", utils::head(bad, 3), "'", collapse = ", "),
      "). Expected names like chr1-1-10000 (Signac), chr1:0-10000 or chr1_0_10000; ",
      "use an assay of binned or peak counts."
    )
  }
  r
}

#' Error if two modalities share no genomic window of width bin.size
#' @noRd
.check_shared_bins <- function(ranges, bin.size) {
  if (length(ranges) < 2L) {
    return(invisible(TRUE))
  }
  windows <- lapply(ranges, function(r) {
    unique(paste(r$chrom, .feature_windows(r, bin.size)))
  })
  nm <- names(ranges)
  for (k in seq_along(windows)[-1L]) {
    if (length(intersect(windows[[1L]], windows[[k]])) == 0L) {
      .stop_input(
        "Assays '", nm[1L], "' and '", nm[k], "' share no genomic bins after rebinning to ",
        format(bin.size, scientific = FALSE), " bp windows (e.g. '",
        utils::head(ranges[[1L]]$chrom, 1), "' vs '", utils::head(ranges[[k]]$chrom, 1),
        "'). Check that all assays use the same genome and chromosome names."
      )
    }
  }
  invisible(TRUE)
}

.check_key <- function(reduction.key) {
  if (!is.character(reduction.key) || length(reduction.key) != 1L || is.na(reduction.key) ||
    !grepl("^[a-zA-Z][a-zA-Z0-9]*_$", reduction.key)) {
    .stop_input(
      "`reduction.key` must match ^[a-zA-Z][a-zA-Z0-9]*_$ (letters and digits ending in one ",
      "underscore, e.g. 'convnetvae_'); got ", paste0("'", reduction.key, "'", collapse = ", "), "."
    )
  }
  invisible(TRUE)
}

.check_name <- function(x, what) {
  if (!is.character(x) || length(x) != 1L || is.na(x) || !nzchar(x)) {
    .stop_input("`", what, "` must be a single non-empty string.")
  }
  invisible(TRUE)
}

#' Check one setting against its rule in R/settings.R (generated from the Python schema)
#'
#' @param x The value.
#' @param r_name Its R name, e.g. "max.epochs".
#' @param group "model", "train", "data" or "embed".
#' @return The value as the type Python expects (whole numbers as integer).
#' @noRd
.check_setting <- function(x, r_name, group) {
  s <- .settings[[group]][[r_name]]
  if (is.null(s)) {
    stop("internal error: no setting '", r_name, "' in group '", group, "'", call. = FALSE)
  }
  if (is.null(x)) {
    if (isTRUE(s$optional)) {
      return(NULL)
    }
    ok <- FALSE
  } else {
    ok <- length(x) == 1L && !is.na(x) && switch(s$type,
      integer = is.numeric(x) && is.finite(x) && x == round(x),
      double = is.numeric(x) && is.finite(x),
      logical = is.logical(x),
      character = is.character(x) && nzchar(x)
    )
  }
  if (ok && !is.null(s$choices)) {
    ok <- x %in% s$choices
  }
  if (ok && !is.na(s$min)) {
    ok <- if (s$min_open) x > s$min else x >= s$min
  }
  if (ok && !is.na(s$max)) {
    ok <- if (s$max_open) x < s$max else x <= s$max
  }
  if (!ok) {
    shown <- if (is.null(x)) "NULL" else paste(format(x), collapse = ", ")
    .stop_input("`", r_name, "` must be ", .describe_setting(s), "; got ", shown, ".")
  }
  switch(s$type,
    integer = as.integer(x),
    double = as.numeric(x),
    x
  )
}

#' What a value of a setting must be, as Python's Setting.describe(names = "r") says it
#' @noRd
.describe_setting <- function(s) {
  if (!is.null(s$choices)) {
    what <- paste0("one of ", paste0("'", s$choices, "'", collapse = ", "))
  } else {
    what <- switch(s$type,
      integer = "a whole number",
      double = "a number",
      logical = "TRUE or FALSE",
      character = "a string"
    )
    bounds <- c(
      if (!is.na(s$min)) paste(if (s$min_open) ">" else ">=", format(s$min)),
      if (!is.na(s$max)) paste(if (s$max_open) "<" else "<=", format(s$max))
    )
    if (length(bounds) > 0L) {
      what <- paste(what, paste(bounds, collapse = " and "))
    }
  }
  if (isTRUE(s$optional)) paste(what, "or NULL") else what
}

.check_number <- function(x, what, integer = TRUE, min = 1) {
  if (!is.numeric(x) || length(x) != 1L || is.na(x) || x < min ||
    (integer && x != round(x))) {
    .stop_input(
      "`", what, "` must be a single ", if (integer) "whole " else "", "number >= ", min,
      "; got ", paste(format(x), collapse = ", "), "."
    )
  }
  invisible(TRUE)
}

#' Coerce a count matrix to dgCMatrix and check it holds raw counts
#' @noRd
.as_counts <- function(m, assay) {
  if (is.null(m) || length(dim(m)) != 2L || any(dim(m) == 0L)) {
    .stop_input(
      "Assay '", assay, "' has no counts (its counts slot is empty). ConvNetVAE models raw ",
      "counts: create the assay with counts = <integer count matrix>, not data = <normalized>."
    )
  }
  if (!methods::is(m, "dgCMatrix")) {
    m <- methods::as(m, "CsparseMatrix")
    m <- methods::as(m, "generalMatrix")
    m <- methods::as(m, "dMatrix")
  }
  x <- m@x
  if (anyNA(x) || any(x < 0) || any(x != round(x))) {
    .stop_input(
      "The counts of assay '", assay, "' are not raw counts (they contain ",
      if (anyNA(x)) "NA values" else if (any(x < 0)) "negative values" else "non-integer values",
      ", e.g. normalized or log-transformed data). Give the raw integer counts ",
      "(GetAssayData(object, assay = '", assay, "', slot = 'counts'))."
    )
  }
  m
}

#' Check batch columns and combine them into one batch label per cell
#' @noRd
.batch_labels <- function(meta, group.by.vars, what = "meta data") {
  if (is.null(group.by.vars)) {
    return(NULL)
  }
  if (!is.character(group.by.vars) || length(group.by.vars) == 0L || anyNA(group.by.vars)) {
    .stop_input("`group.by.vars` must be NULL or a character vector of column names.")
  }
  missing <- setdiff(group.by.vars, colnames(meta))
  if (length(missing) > 0L) {
    .stop_input(
      "`group.by.vars` column ", paste0("'", missing, "'", collapse = ", "),
      " does not exist in the ", what, ". Available columns: ",
      paste0("'", utils::head(colnames(meta), 20), "'", collapse = ", "), "."
    )
  }
  labs <- lapply(group.by.vars, function(v) {
    x <- meta[[v]]
    n_na <- sum(is.na(x))
    if (n_na > 0L) {
      .stop_input(
        "`group.by.vars` column '", v, "' has NA for ", n_na, " of ", length(x),
        " cells. Fill in or remove those cells before running ConvNetVAE."
      )
    }
    as.character(x)
  })
  labels <- do.call(paste, c(labs, sep = "_"))
  .check_batch_sizes(labels, paste0(
    "`group.by.vars` (", paste0("'", group.by.vars, "'", collapse = ", "), ")"
  ))
  attr(labels, "column") <- paste(group.by.vars, collapse = "+")
  labels
}

#' Warn when a batch column looks like a per-cell value: batches of one cell, or more batches
#' than a tenth of the cells. The model learns parameters for every batch (a one-hot input and
#' an offset per bin), which a batch of one or a few cells cannot inform.
#' @noRd
.check_batch_sizes <- function(labels, what) {
  sizes <- table(labels)
  n <- length(labels)
  singles <- sum(sizes == 1L)
  if (singles == 0L && length(sizes) <= n / 10) {
    return(invisible(TRUE))
  }
  detail <- if (singles == length(sizes)) {
    "one cell per batch"
  } else if (singles > 0L) {
    paste0(singles, if (singles == 1L) " batch" else " batches", " of a single cell")
  } else {
    "more batches than a tenth of the cells"
  }
  warning(structure(
    class = c("convnetvae_batch_warning", "warning", "condition"),
    list(message = paste0(
      what, " gives ", format(length(sizes), big.mark = ","), " batches for ",
      format(n, big.mark = ","), " cells (", detail, "). A batch should be a sample, ",
      "replicate or experiment with many cells: the model learns parameters for every batch. ",
      "Is this a per-cell column (a barcode, a count, a cluster)?"
    ), call = NULL)
  ))
  invisible(FALSE)
}

#' Split a numeric or integer vector into little-endian raw chunks (writeBin is limited to
#' 2^31 - 1 bytes per call)
#' @noRd
.to_raw <- function(v, what = c("double", "integer")) {
  what <- match.arg(what)
  size <- if (what == "double") 8L else 4L
  v <- if (what == "double") as.double(v) else as.integer(v)
  chunk <- 2^27
  n <- length(v)
  if (n == 0L) {
    return(list(raw(0)))
  }
  starts <- seq(1, n, by = chunk)
  lapply(starts, function(s) {
    e <- min(n, s + chunk - 1)
    writeBin(v[s:e], raw(), size = size, endian = "little")
  })
}

#' A features x cells dgCMatrix as plain Python-bound data: CSC arrays as bytes, no numpy
#' conversion in R (reticulate < 1.36 cannot convert arrays with NumPy 2) and no densifying.
#' @noRd
.encode_csc <- function(m) {
  list(
    format = "csc",
    shape = as.list(as.integer(dim(m))),
    indptr = .to_raw(m@p, "integer"),
    indices = .to_raw(m@i, "integer"),
    data = .to_raw(m@x, "double")
  )
}

#' Decode a column-major float64 matrix returned by the bridge
#' @noRd
.decode_matrix <- function(res) {
  shape <- as.integer(unlist(res$shape))
  bytes <- res$data
  if (is.list(bytes)) {
    bytes <- do.call(c, bytes)
  }
  v <- readBin(bytes, what = "double", n = prod(shape), size = 8L, endian = "little")
  matrix(v, nrow = shape[1L], ncol = shape[2L])
}
