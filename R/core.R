# The one place that talks to the Python bridge for training and projection. The S3 methods
# collect and check their inputs, call these, and assign their results last.

.blacklist_arg <- function(blacklist) {
  if (is.null(blacklist)) {
    return(NULL)
  }
  if (is.character(blacklist)) {
    if (length(blacklist) != 1L || !file.exists(blacklist)) {
      .stop_input(
        "`blacklist` must be NULL, the path of an existing BED file (gz or not), or a ",
        "data.frame with columns chrom, start, end (0-based, half-open); got '",
        paste(blacklist, collapse = "', '"), "'."
      )
    }
    return(normalizePath(blacklist))
  }
  if (methods::is(blacklist, "GRanges")) {
    df <- as.data.frame(blacklist)
    blacklist <- data.frame(
      chrom = as.character(df$seqnames), start = df$start - 1, end = df$end,
      stringsAsFactors = FALSE
    )
  }
  if (is.data.frame(blacklist) && all(c("chrom", "start", "end") %in% colnames(blacklist))) {
    return(list(
      chrom = as.list(as.character(blacklist$chrom)),
      start = as.list(as.numeric(blacklist$start)),
      end = as.list(as.numeric(blacklist$end))
    ))
  }
  .stop_input(
    "`blacklist` must be NULL, a BED file path, a GRanges, or a data.frame with columns ",
    "chrom, start, end."
  )
}

#' Encode matrices + cells + batches for the bridge
#' @noRd
.bridge_inputs <- function(matrices, orientation, cell.names, batch) {
  enc <- lapply(matrices, function(m) {
    e <- .encode_csc(m)
    e$orientation <- orientation
    e
  })
  feats <- lapply(matrices, function(m) {
    as.list(if (orientation == "features_x_cells") rownames(m) else colnames(m))
  })
  obs <- NULL
  batch_key <- NULL
  if (!is.null(batch)) {
    # named after the user's group.by.vars columns, so that messages name them
    batch_key <- attr(batch, "column")
    if (is.null(batch_key) || !nzchar(batch_key)) {
      batch_key <- "batch"
    }
    obs <- stats::setNames(list(as.list(as.character(batch))), batch_key)
  }
  list(
    matrices = enc, feature_names = feats, cell_names = as.list(as.character(cell.names)),
    obs = obs, batch_key = batch_key
  )
}

.history_df <- function(h) {
  if (is.null(h) || length(h) == 0L) {
    return(data.frame())
  }
  cols <- lapply(h, function(col) {
    v <- unlist(lapply(col, function(x) if (is.null(x)) NA else x))
    v
  })
  as.data.frame(cols, stringsAsFactors = FALSE, check.names = FALSE)
}

#' Train a model on the encoded inputs and return the embedding (cells x latent, rownames =
#' cells), the history data.frame and the configuration list.
#' @noRd
.train_embed <- function(matrices, orientation, cell.names, batch, config, dots, verbose) {
  bridge <- .bridge()
  inputs <- .bridge_inputs(matrices, orientation, cell.names, batch)
  config$extra <- .dots_config(dots)
  config$verbose <- isTRUE(verbose)
  res <- .py_call(bridge$run_from_r(
    matrices = inputs$matrices, feature_names = inputs$feature_names,
    cell_names = inputs$cell_names, obs = inputs$obs, batch_key = inputs$batch_key,
    config = config, emit = .emitter(verbose)
  ))
  .decode_result(res, cell.names)
}

#' The function Python calls to show a message (live, so progress shows while training);
#' NULL when not verbose
#' @noRd
.emitter <- function(verbose) {
  if (isTRUE(verbose)) function(text) message(text) else NULL
}

#' Signal what Python returned for R: messages it could not show live and Python's warnings
#' (as R warnings of class convnetvae_python_warning, which suppressWarnings/tryCatch see)
#' @noRd
.signal_python <- function(res) {
  for (m in unlist(res$messages)) {
    message(m)
  }
  for (w in unlist(res$warnings)) {
    warning(structure(
      class = c("convnetvae_python_warning", "warning", "condition"),
      list(message = paste0("ConvNetVAE (Python): ", w), call = NULL)
    ))
  }
  invisible(NULL)
}

.decode_result <- function(res, cell.names) {
  res <- reticulate::py_to_r(res)
  .signal_python(res)
  emb <- .decode_matrix(res$embedding)
  if (nrow(emb) != length(cell.names)) {
    stop("The Python core returned ", nrow(emb), " rows for ", length(cell.names), " cells.",
      call. = FALSE
    )
  }
  rownames(emb) <- cell.names
  list(
    embedding = emb, history = .history_df(res$history), config = res$config,
    bins = as.character(unlist(res$bins))
  )
}

#' Embed cells with a saved model
#' @noRd
.project_embed <- function(matrices, orientation, cell.names, batch, model.dir, dots, verbose,
                           adapt = FALSE) {
  if (!isTRUE(adapt) && !isFALSE(adapt)) {
    .stop_input("`adapt` must be TRUE or FALSE.")
  }
  bridge <- .bridge()
  inputs <- .bridge_inputs(matrices, orientation, cell.names, batch)
  res <- .py_call(bridge$project_from_r(
    matrices = inputs$matrices, feature_names = inputs$feature_names,
    cell_names = inputs$cell_names, obs = inputs$obs, batch_key = inputs$batch_key,
    model_dir = normalizePath(model.dir, mustWork = FALSE),
    config = list(
      extra = .dots_config(dots, if (adapt) "train" else "embed"), verbose = isTRUE(verbose),
      adapt = adapt
    ), emit = .emitter(verbose)
  ))
  .decode_result(res, cell.names)
}

#' The configuration sent to Python: every setting that is a formal of the calling method
#' (R/settings.R marks them), checked and under its Python name, plus the R-only arguments.
#' @param env The calling method's environment (its formals are read from it).
#' @noRd
.run_config <- function(env, blacklist, model.dir, assays, group.by.vars) {
  config <- list()
  for (group in c("model", "train", "data")) {
    for (r_name in names(.settings[[group]])) {
      s <- .settings[[group]][[r_name]]
      if (isTRUE(s$formal)) {
        value <- .check_setting(get(r_name, envir = env), r_name, group)
        config[s$name] <- list(value)
      }
    }
  }
  if (!is.null(model.dir)) {
    .check_name(model.dir, "model.dir")
  }
  c(config, list(
    blacklist = .blacklist_arg(blacklist),
    model_dir = if (is.null(model.dir)) NULL else normalizePath(model.dir, mustWork = FALSE),
    assays = as.list(assays), group_by_vars = as.list(group.by.vars)
  ))
}

#' Arguments passed through `...`: named, R names turned into Python names (learning.rate ->
#' lr), known settings type-checked here; unknown names are left for Python to reject.
#' @noRd
.dots_config <- function(dots, groups = c("model", "train")) {
  if (length(dots) == 0L) {
    return(list())
  }
  if (is.null(names(dots)) || any(!nzchar(names(dots)))) {
    .stop_input("Extra arguments passed through `...` must be named.")
  }
  out <- list()
  for (r_name in names(dots)) {
    group <- Find(function(g) !is.null(.settings[[g]][[r_name]]), groups)
    if (is.null(group)) {
      out[gsub(".", "_", r_name, fixed = TRUE)] <- list(dots[[r_name]])
    } else {
      s <- .settings[[group]][[r_name]]
      out[s$name] <- list(.check_setting(dots[[r_name]], r_name, group))
    }
  }
  out
}
