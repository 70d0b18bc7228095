# The R half of `make demo`: RunConvNetVAE on the package's example Seurat object, then UMAP,
# clusters and a DimPlot by cell type and batch, saved as PNG next to the Python demo's outputs.
#
# Usage: Rscript scripts/demo.R OUTDIR
# Needs the R package ConvNetVAE installed (make setup) and its Python core (CONVNETVAE_PYTHON).
args <- commandArgs(trailingOnly = TRUE)
out_dir <- if (length(args) >= 1) args[[1]] else "demo_output"
dir.create(out_dir, recursive = TRUE, showWarnings = FALSE)

suppressPackageStartupMessages({
  library(ConvNetVAE)
  library(Seurat)
  library(ggplot2)
})

options(Seurat.warn.umap.uwot = FALSE)
t0 <- Sys.time()
obj <- readRDS(convnetvae_example("seurat"))
cat(sprintf("[R demo] example object: %d cells, assays %s\n", ncol(obj),
            paste(Assays(obj), collapse = ", ")))

obj <- RunConvNetVAE(obj,
  assays = c("ATAC", "H3K27ac", "H3K27me3"), group.by.vars = "batch",
  architecture = "conv-k11s11", n.latent = 10, max.epochs = 40, seed = 42,
  model.dir = file.path(out_dir, "r_convnetvae_model"), verbose = FALSE
)
misc <- Misc(obj[["convnetvae"]])
cat(sprintf("[R demo] trained %d epochs on %d bins (%s), %d parameters\n",
            nrow(misc$history), misc$config$n_bins, misc$config$architecture,
            misc$config$n_parameters))

dims <- seq_len(ncol(Embeddings(obj, "convnetvae")))
obj <- RunUMAP(obj, reduction = "convnetvae", dims = dims, seed.use = 42, verbose = FALSE)
obj <- FindNeighbors(obj, reduction = "convnetvae", dims = dims, verbose = FALSE)
obj <- FindClusters(obj, resolution = 0.5, verbose = FALSE)

# agreement of clusters with the simulated cell types (adjusted Rand index, no extra packages)
ari <- function(a, b) {
  tab <- table(a, b)
  comb <- function(x) sum(choose(x, 2))
  s <- comb(tab); sa <- comb(rowSums(tab)); sb <- comb(colSums(tab)); n <- choose(sum(tab), 2)
  (s - sa * sb / n) / ((sa + sb) / 2 - sa * sb / n)
}
score <- ari(obj$seurat_clusters, obj$cell_type)
cat(sprintf("[R demo] %d clusters, ARI vs cell type = %.3f\n",
            length(unique(obj$seurat_clusters)), score))

p1 <- DimPlot(obj, reduction = "umap", group.by = "cell_type") + ggtitle("ConvNet-VAE: cell type")
p2 <- DimPlot(obj, reduction = "umap", group.by = "batch") + ggtitle("ConvNet-VAE: batch")
png_path <- file.path(out_dir, "r_umap_celltype_batch.png")
tmp <- tempfile(tmpdir = out_dir, fileext = ".png")
ggsave(tmp, p1 + p2, width = 11, height = 4.5, dpi = 100)
invisible(file.rename(tmp, png_path))

writeLines(c(
  sprintf("cells\t%d", ncol(obj)),
  sprintf("epochs\t%d", nrow(misc$history)),
  sprintf("bins\t%d", misc$config$n_bins),
  sprintf("clusters\t%d", length(unique(obj$seurat_clusters))),
  sprintf("ari_cell_type\t%.4f", score),
  sprintf("seconds\t%.1f", as.numeric(difftime(Sys.time(), t0, units = "secs")))
), file.path(out_dir, "r_demo_summary.tsv"))
cat(sprintf("[R demo] wrote %s (%.0f s)\n", png_path,
            as.numeric(difftime(Sys.time(), t0, units = "secs"))))
