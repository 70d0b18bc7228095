# Reading and writing Seurat objects through their slots where a class's own package may be
# missing. A Seurat object made with Signac holds ChromatinAssay objects; without Signac
# installed every generic that dispatches on them (Assays(), colnames(), object[["x"]] <- ...)
# stops with "unable to find required package 'Signac'". Their slots (counts, ranges) are plain
# Matrix and GenomicRanges data, read here directly, so RunConvNetVAE works with or without Signac.

#' Whether the package defining an S4 object's class can be loaded (TRUE for S3 and base objects)
#' @noRd
.class_available <- function(x) {
  pkg <- attr(class(x), "package")
  is.null(pkg) || pkg %in% loadedNamespaces() || requireNamespace(pkg, quietly = TRUE)
}

#' Whether every assay of a Seurat object can use its class's methods (FALSE: e.g. a
#' ChromatinAssay without Signac installed)
#' @noRd
.seurat_methods_usable <- function(object) {
  all(vapply(methods::slot(object, "assays"), .class_available, logical(1)))
}

.seurat_assays <- function(object) {
  names(methods::slot(object, "assays"))
}

.seurat_cells <- function(object) {
  rownames(methods::slot(object, "meta.data"))
}

#' Names "chr1-1000-2000" (Signac's style, 1-based) of a GRanges, read from its slots without
#' GenomicRanges; NULL when `gr` is not one
#' @noRd
.granges_names <- function(gr) {
  seqnames <- attr(gr, "seqnames", exact = TRUE)
  ranges <- attr(gr, "ranges", exact = TRUE)
  if (is.null(seqnames) || is.null(ranges)) {
    return(NULL)
  }
  chrom <- rep(as.character(attr(seqnames, "values", exact = TRUE)),
    attr(seqnames, "lengths", exact = TRUE))
  start <- attr(ranges, "start", exact = TRUE)
  width <- attr(ranges, "width", exact = TRUE)
  if (length(chrom) != length(start) || length(start) != length(width)) {
    return(NULL)
  }
  paste0(chrom, "-", format(start, scientific = FALSE, trim = TRUE), "-",
    format(start + width - 1, scientific = FALSE, trim = TRUE))
}

#' The raw counts (features x cells) of one assay and the genomic range of each feature
#'
#' Assays with a counts slot (Seurat v3-v4 Assay, Signac ChromatinAssay) are read from their
#' slots; others (Seurat v5 Assay5) through SeuratObject's GetAssayData(). Feature names are the
#' ranges when they parse (Signac names its features after them); otherwise a ChromatinAssay's
#' `ranges` slot gives them.
#' @return list(counts, features): features are the names used as genomic ranges.
#' @noRd
.assay_counts <- function(object, assay) {
  x <- methods::slot(object, "assays")[[assay]]
  counts <- attr(x, "counts", exact = TRUE)
  if (is.null(counts)) {
    if (!.class_available(x)) {
      .stop_input(
        "Assay '", assay, "' is a ", class(x)[1L], " from the package '",
        attr(class(x), "package"), "', which is not installed, and has no counts slot to read ",
        "without it: install that package."
      )
    }
    counts <- SeuratObject::GetAssayData(object, assay = assay, slot = "counts")
  }
  features <- rownames(counts)
  if (!is.null(features) && !all(.parse_ranges(features)$ok)) {
    from_ranges <- .granges_names(attr(x, "ranges", exact = TRUE))
    if (length(from_ranges) == length(features)) {
      features <- from_ranges
      rownames(counts) <- features
    }
  }
  list(counts = counts, features = features)
}

#' Add a reduction to a Seurat object: through Seurat's `[[<-` when every assay's class is
#' usable, else into the slots directly (the cells are the object's, in order). The caller then
#' logs the command (LogSeuratCommand() reads the calling method's frame).
#' @noRd
.store_reduction <- function(object, name, reduc) {
  if (.seurat_methods_usable(object)) {
    object[[name]] <- reduc
  } else {
    reductions <- methods::slot(object, "reductions")
    reductions[[name]] <- reduc
    methods::slot(object, "reductions") <- reductions
  }
  object
}

#' Store a SeuratCommand; the command spans several assays, so Seurat's warning about a command
#' without one assay is expected and muffled.
#' @noRd
.log_command <- function(object, command) {
  if (!.seurat_methods_usable(object)) {
    commands <- methods::slot(object, "commands")
    commands[[command@name]] <- command
    methods::slot(object, "commands") <- commands
    return(object)
  }
  withCallingHandlers(
    {
      object[[command@name]] <- command
    },
    warning = function(w) {
      if (grepl("command log without an assay", conditionMessage(w), fixed = TRUE)) {
        invokeRestart("muffleWarning")
      }
    }
  )
  object
}

#' The embedding as a DimReduc with the per-dimension standard deviation (Stdev(), ElbowPlot())
#' and feature loadings (print(), VizDimLoadings()) of the first assay's features
#' @noRd
.dim_reduc <- function(emb, key, assay, misc, counts = NULL) {
  loadings <- if (is.null(counts)) NULL else .feature_loadings(counts, emb)
  SeuratObject::CreateDimReducObject(
    embeddings = emb, loadings = if (is.null(loadings)) methods::new("matrix") else loadings,
    key = key, assay = assay, stdev = unname(apply(emb, 2L, stats::sd)), misc = misc
  )
}

#' Feature loadings of an embedding: the correlation, over cells, of each feature's
#' log-normalised counts (log1p of counts per 10,000) with each dimension, kept for the
#' `n` features of each sign most correlated with some dimension (as Seurat keeps PCA loadings
#' for the variable features only). A VAE has no linear loadings; these say which features
#' follow each dimension.
#' @param counts Features x cells dgCMatrix (the cells of `emb`, in order).
#' @noRd
.feature_loadings <- function(counts, emb, n = 20L) {
  cells <- ncol(counts)
  if (cells < 3L || nrow(counts) == 0L) {
    return(NULL)
  }
  lib <- Matrix::colSums(counts)
  lib[lib == 0] <- 1
  x <- counts %*% Matrix::Diagonal(x = 1e4 / lib)
  x <- methods::as(x, "CsparseMatrix")
  x@x <- log1p(x@x)
  mean_x <- Matrix::rowMeans(x)
  sd_x <- sqrt(pmax(Matrix::rowSums(x^2) / cells - mean_x^2, 0))
  centred <- sweep(emb, 2L, colMeans(emb))
  sd_z <- sqrt(colSums(centred^2) / cells)
  cor <- as.matrix(x %*% centred) / cells / outer(sd_x, sd_z)
  cor[!is.finite(cor)] <- 0
  keep <- unique(unlist(lapply(seq_len(ncol(cor)), function(d) {
    o <- order(cor[, d])
    c(utils::head(o, n), utils::tail(o, n))
  })))
  keep <- sort(keep)
  out <- cor[keep, , drop = FALSE]
  rownames(out) <- rownames(counts)[keep]
  colnames(out) <- colnames(emb)
  out
}
