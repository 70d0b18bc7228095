# The one place that talks to the Python bridge for training and projection. The S3 methods
# collect and check their inputs, call these, and assign their results last.

.snake_names <- function(x) {
  if (length(x) == 0L) {
    return(list())
  }
  if (is.null(names(x)) || any(!nzchar(names(x)))) {
    .stop_input("Extra arguments passed through `...` must be named.")
  }
  names(x) <- gsub(".", "_", names(x), fixed = TRUE)
  x
}

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
    obs <- list(batch = as.list(as.character(batch)))
    batch_key <- "batch"
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
  config$extra <- .snake_names(dots)
  config$verbose <- isTRUE(verbose)
  if (verbose) {
    message(
      "ConvNetVAE: training on ", length(cell.names), " cells x ", length(matrices),
      " modalities (", paste(names(matrices), collapse = ", "), ")."
    )
  }
  res <- .py_call(bridge$run_from_r(
    matrices = inputs$matrices, feature_names = inputs$feature_names,
    cell_names = inputs$cell_names, obs = inputs$obs, batch_key = inputs$batch_key,
    config = config
  ))
  .decode_result(res, cell.names)
}

.decode_result <- function(res, cell.names) {
  res <- reticulate::py_to_r(res)
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
.project_embed <- function(matrices, orientation, cell.names, batch, model.dir, dots, verbose) {
  bridge <- .bridge()
  inputs <- .bridge_inputs(matrices, orientation, cell.names, batch)
  res <- .py_call(bridge$project_from_r(
    matrices = inputs$matrices, feature_names = inputs$feature_names,
    cell_names = inputs$cell_names, obs = inputs$obs, batch_key = inputs$batch_key,
    model_dir = normalizePath(model.dir, mustWork = FALSE),
    config = list(extra = .snake_names(dots), verbose = isTRUE(verbose))
  ))
  .decode_result(res, cell.names)
}

.common_config <- function(bin.size, n.bins, blacklist, architecture, likelihood, n.latent,
                           max.epochs, batch.size, learning.rate, device, seed, model.dir,
                           assays, group.by.vars) {
  .check_number(bin.size, "bin.size")
  .check_number(n.bins, "n.bins")
  .check_number(n.latent, "n.latent")
  .check_number(max.epochs, "max.epochs")
  .check_number(batch.size, "batch.size", min = 2)
  .check_number(learning.rate, "learning.rate", integer = FALSE, min = 0)
  .check_number(seed, "seed", min = 0)
  .check_name(architecture, "architecture")
  .check_name(device, "device")
  if (!is.character(likelihood) || length(likelihood) != 1L ||
    !likelihood %in% c("poisson", "nb")) {
    .stop_input("`likelihood` must be \"poisson\" or \"nb\"; got '", paste(likelihood), "'.")
  }
  if (!is.null(model.dir)) {
    .check_name(model.dir, "model.dir")
  }
  list(
    bin_size = as.integer(bin.size), n_bins = as.integer(n.bins),
    blacklist = .blacklist_arg(blacklist), architecture = architecture,
    likelihood = likelihood, n_latent = as.integer(n.latent),
    max_epochs = as.integer(max.epochs), batch_size = as.integer(batch.size),
    learning_rate = as.numeric(learning.rate), device = device, seed = as.integer(seed),
    model_dir = if (is.null(model.dir)) NULL else normalizePath(model.dir, mustWork = FALSE),
    assays = as.list(assays), group_by_vars = as.list(group.by.vars)
  )
}
