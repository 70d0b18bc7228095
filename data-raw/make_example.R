# Make the example data of the R package ConvNetVAE (inst/extdata/):
#   example_seurat.rds          simulated multimodal Seurat object (300 cells, 3 assays, 2 batches)
#   example_fragments.tsv.gz    ATAC fragments of the first 30 cells
# Run from the repository root:  Rscript data-raw/make_example.R
# Deterministic (fixed seed); needs Seurat/SeuratObject and Matrix only.
suppressPackageStartupMessages({
  library(Matrix)
  library(SeuratObject)
})
set.seed(20250101)

bin_size <- 10000L
chrom_bins <- c(chr1 = 800L, chr2 = 700L, chr3 = 500L) # 2,000 bins of 10 kb
chrom <- rep(names(chrom_bins), chrom_bins)
idx <- unlist(lapply(chrom_bins, function(n) seq_len(n) - 1L), use.names = FALSE)
start0 <- idx * bin_size
# Signac-style names: 1-based, closed
bins <- paste0(chrom, "-", start0 + 1L, "-", start0 + bin_size)
n_bins <- length(bins)

cell_types <- c("Astrocytes", "Neurons", "Oligodendrocytes", "OPC")
modalities <- c("ATAC", "H3K27ac", "H3K27me3")
depth <- c(ATAC = 500, H3K27ac = 340, H3K27me3 = 280) # median counts per cell

# smooth genomic signal: a random walk per chromosome, i.e. domains that span neighbouring bins
smooth_track <- function(sd = 0.25) {
  unlist(lapply(chrom_bins, function(n) {
    x <- cumsum(rnorm(n, sd = sd))
    x - mean(x)
  }), use.names = FALSE)
}
# cell-type domains: blocks of 5-30 neighbouring bins up- or down-regulated
domains <- function(n_domains = 30, effect = 1.6) {
  x <- numeric(n_bins)
  for (k in seq_len(n_domains)) {
    len <- sample(5:30, 1)
    s <- sample.int(n_bins - len, 1)
    x[s:(s + len - 1)] <- x[s:(s + len - 1)] + sample(c(-1, 1), 1) * effect
  }
  x
}
base_active <- smooth_track()
base_repressed <- -0.6 * base_active + smooth_track(0.15)
type_active <- lapply(cell_types, function(t) domains())
names(type_active) <- cell_types

log_rate <- function(modality, type) {
  act <- base_active + type_active[[type]]
  switch(modality,
    ATAC = act,
    H3K27ac = 1.1 * act + rnorm(n_bins, sd = 0.05),
    H3K27me3 = base_repressed - 0.8 * type_active[[type]]
  )
}

n_cells <- 300L
batch <- rep(c("batch1", "batch2"), each = n_cells / 2)
cell_type <- sample(cell_types, n_cells, replace = TRUE, prob = c(0.3, 0.35, 0.2, 0.15))
cells <- sprintf("%s_cell%03d", batch, seq_len(n_cells))

# batch effect: a smooth bin-level distortion per batch and modality, plus a depth shift
batch_effect <- lapply(modalities, function(m) {
  list(batch1 = 0.15 * smooth_track(0.1), batch2 = 0.15 * smooth_track(0.1))
})
names(batch_effect) <- modalities
batch_depth <- c(batch1 = 1, batch2 = 1.25)

simulate_counts <- function(modality) {
  rates <- lapply(cell_types, function(t) log_rate(modality, t))
  names(rates) <- cell_types
  cols <- vector("list", n_cells)
  for (j in seq_len(n_cells)) {
    lr <- rates[[cell_type[j]]] + batch_effect[[modality]][[batch[j]]]
    p <- exp(lr - max(lr))
    lib <- rnbinom(1, mu = depth[[modality]] * batch_depth[[batch[j]]], size = 4) + 20
    x <- tabulate(sample.int(n_bins, lib, replace = TRUE, prob = p), nbins = n_bins)
    nz <- which(x > 0)
    cols[[j]] <- list(i = nz, x = x[nz])
  }
  sparseMatrix(
    i = unlist(lapply(cols, `[[`, "i")),
    j = rep(seq_len(n_cells), vapply(cols, function(c) length(c$i), integer(1))),
    x = as.numeric(unlist(lapply(cols, `[[`, "x"))),
    dims = c(n_bins, n_cells), dimnames = list(bins, cells)
  )
}

counts <- lapply(modalities, simulate_counts)
names(counts) <- modalities

obj <- CreateSeuratObject(counts = counts$ATAC, assay = "ATAC", project = "ConvNetVAE-example")
for (m in modalities[-1]) {
  obj[[m]] <- CreateAssayObject(counts = counts[[m]])
}
obj$batch <- batch
obj$cell_type <- cell_type
Misc(obj, "ConvNetVAE_example") <- list(
  made_by = "data-raw/make_example.R", seed = 20250101L, bin_size = bin_size,
  genome = "simulated (chr1 8 Mb, chr2 7 Mb, chr3 5 Mb)"
)

out <- file.path("inst", "extdata")
dir.create(out, recursive = TRUE, showWarnings = FALSE)
tmp <- tempfile(tmpdir = out, fileext = ".rds")
saveRDS(obj, tmp, compress = "xz")
invisible(file.rename(tmp, file.path(out, "example_seurat.rds")))

# fragments of the ATAC reads of the first 30 cells: one line per read, 0-based half-open
frag <- do.call(rbind, lapply(seq_len(30), function(j) {
  col <- counts$ATAC[, j]
  nz <- which(col > 0)
  b <- rep(nz, col[nz])
  len <- sample(60:400, length(b), replace = TRUE)
  s <- start0[b] + sample.int(bin_size - 400L, length(b), replace = TRUE)
  data.frame(chrom = chrom[b], start = s, end = s + len, barcode = cells[j], count = 1L)
}))
frag <- frag[order(match(frag$chrom, names(chrom_bins)), frag$start, frag$barcode), ]
tmp <- tempfile(tmpdir = out, fileext = ".tsv.gz")
con <- gzfile(tmp, "w")
writeLines("# simulated ATAC fragments (chrom, start, end, barcode, count); data-raw/make_example.R", con)
write.table(frag, con, sep = "\t", quote = FALSE, row.names = FALSE, col.names = FALSE)
close(con)
invisible(file.rename(tmp, file.path(out, "example_fragments.tsv.gz")))

cat("cells:", n_cells, " bins:", n_bins, " nnz:",
    paste(vapply(counts, function(m) length(m@x), integer(1)), collapse = "/"),
    " fragments:", nrow(frag), "\n")
print(file.info(list.files(out, full.names = TRUE))[, "size", drop = FALSE])
