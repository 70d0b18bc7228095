# The example data in inst/extdata (made by data-raw/make_example.R).

test_that("the example Seurat object is small, multimodal, with two batches and labels", {
  path <- convnetvae_example("seurat")
  expect_lt(file.size(path), 1e6)
  obj <- readRDS(path)
  expect_s4_class(obj, "Seurat")
  expect_identical(SeuratObject::Assays(obj), c("ATAC", "H3K27ac", "H3K27me3"))
  expect_equal(ncol(obj), 300L)
  for (a in SeuratObject::Assays(obj)) {
    f <- rownames(obj[[a]])
    expect_length(f, 2000L)
    expect_true(all(grepl("^chr[0-9]+-[0-9]+-[0-9]+$", f)))
    x <- SeuratObject::GetAssayData(obj, assay = a, slot = "counts")
    expect_true(all(x@x == round(x@x)) && all(x@x > 0))
  }
  expect_setequal(unique(obj$batch), c("batch1", "batch2"))
  expect_setequal(unique(obj$cell_type), c("Astrocytes", "Neurons", "Oligodendrocytes", "OPC"))
})

test_that("the example fragment file holds the ATAC counts of the first 30 cells", {
  path <- convnetvae_example("fragments")
  expect_lt(file.size(path), 1e6)
  frag <- utils::read.table(gzfile(path), sep = "\t", comment.char = "#",
    col.names = c("chrom", "start", "end", "barcode", "count"))
  obj <- readRDS(convnetvae_example("seurat"))
  expect_true(all(frag$barcode %in% colnames(obj)[1:30]))
  expect_true(all(frag$end > frag$start))
  # bin each fragment by its start (fragments lie inside one 10 kb window) and compare
  w <- as.integer(frag$start %/% 10000)
  bin <- sprintf("%s-%d-%d", frag$chrom, w * 10000L + 1L, (w + 1L) * 10000L)
  tab <- table(factor(bin, levels = rownames(obj[["ATAC"]])), factor(frag$barcode, levels = colnames(obj)[1:30]))
  atac <- as.matrix(SeuratObject::GetAssayData(obj, assay = "ATAC", slot = "counts")[, 1:30])
  expect_equal(unname(as.matrix(unclass(tab))), unname(atac))
})
