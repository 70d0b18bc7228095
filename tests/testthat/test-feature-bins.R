# Feature names -> coordinates -> the window of their midpoint: the same table as
# tests/python/test_bins.py, so R and Python apply the same rule.

test_that("R parses feature names and assigns windows as Python does", {
  cases <- utils::read.delim(test_path("feature_bins.tsv"),
    comment.char = "#", colClasses = "character", na.strings = "NA"
  )
  expect_gt(nrow(cases), 20)
  r <- ConvNetVAE:::.parse_ranges(cases$name)
  ok <- as.logical(cases$ok)
  expect_identical(r$ok, ok, info = paste(cases$name[r$ok != ok], collapse = ", "))
  expect_identical(r$chrom[ok], cases$chrom[ok])
  expect_equal(r$start[ok], as.numeric(cases$start[ok]))
  expect_equal(r$end[ok], as.numeric(cases$end[ok]))
  win <- ConvNetVAE:::.feature_windows(r[ok, ], as.numeric(cases$bin_size[ok]))
  expect_equal(win, as.numeric(cases$window[ok]), info = paste(cases$name[ok], collapse = ", "))
})

test_that("modalities share bins by the midpoint rule", {
  r1 <- ConvNetVAE:::.parse_ranges("chr1:9000-12000") # midpoint 10500: window 1
  r2 <- ConvNetVAE:::.parse_ranges("chr1:10000-20000")
  expect_true(ConvNetVAE:::.check_shared_bins(list(a = r1, b = r2), 10000))
  r3 <- ConvNetVAE:::.parse_ranges("chr1:0-10000")
  expect_error(
    ConvNetVAE:::.check_shared_bins(list(a = r1, b = r3), 10000), "share no genomic bins",
    class = "convnetvae_input_error"
  )
})
