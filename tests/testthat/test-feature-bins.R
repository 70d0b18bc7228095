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

test_that("the vectorised parser gives what a match per name gives", {
  # the oracle: each name matched on its own (regexec + regmatches), the forms in order
  one <- function(x) {
    for (form in ConvNetVAE:::.bin_name_patterns) {
      m <- regmatches(x, regexec(form$pattern, x))[[1L]]
      if (length(m) == 4L) {
        return(list(chrom = m[2], start = as.numeric(m[3]) - form$shift, end = as.numeric(m[4])))
      }
    }
    list(chrom = NA_character_, start = NA_real_, end = NA_real_)
  }
  set.seed(1)
  parts <- c("chr1", "chrUn_KI270302v1", "chr1-2", "chr_1:2", "1", "", "a:b", "chr18_GL456216_random")
  x <- vapply(seq_len(1500), function(i) {
    paste0(
      sample(parts, 1), sample(c(":", "-", "_", " ", ""), 1),
      sample(c("0", "1", "500", "10000", "99999999999", "x", ""), 1), sample(c("-", "_", ":"), 1),
      sample(c("0", "1", "10000", "20000", "y", ""), 1),
      if (runif(1) < 0.1) sample(c("-5", "_3", ":2-9"), 1) else ""
    )
  }, "")
  x <- c(x, NA, "chr1:10-5", "chr1-0-10", "chr1-1-10000")
  r <- ConvNetVAE:::.parse_ranges(x)
  want <- do.call(rbind, lapply(x, function(v) as.data.frame(one(v), stringsAsFactors = FALSE)))
  expect_gt(sum(r$ok), 50) # names of every form are among them
  expect_identical(r$chrom, want$chrom)
  expect_identical(r$start, want$start)
  expect_identical(r$end, want$end)
})
