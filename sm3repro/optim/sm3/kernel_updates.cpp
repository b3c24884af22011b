// SM3's update arithmetic per cover; compiled with kernel.cpp as one unit, this file first.
//
// A parameter is viewed as a (rows, cols) matrix; the column accumulator `col` is null for the
// rows and singleton covers. Each kernel reads the gradient and the parameter once, writes the
// parameter once, and max-reduces the new accumulators on the way, so it needs no full-size
// scratch. Column maxima are reduced per thread into a (threads, cols) buffer and combined after
// the parallel loop: the old column accumulator must stay readable until every row is done.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace {

// Rows per parallel chunk: enough elements to amortise the chunk's start.
int64_t grain_rows(int64_t cols) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)); }

void check_same(const at::Tensor& a, const at::Tensor& b, const char* what) {
  TORCH_CHECK(a.is_contiguous() && a.device().is_cpu(), what, " must be a contiguous CPU tensor");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), what, " must have the parameter's dtype");
}

enum class Cover { kRows, kDims, kSingleton };

Cover parse_cover(const std::string& cover) {
  if (cover == "rows") return Cover::kRows;
  if (cover == "dims") return Cover::kDims;
  TORCH_CHECK(cover == "singleton", "cover must be \"rows\", \"dims\" or \"singleton\", got \"",
              cover, "\"");
  return Cover::kSingleton;
}

bool is_variant_ii(const std::string& variant) {
  TORCH_CHECK(variant == "i" || variant == "ii", "variant must be \"i\" or \"ii\", got \"", variant,
              "\"");
  return variant == "ii";
}

// The update u = g / (sqrt(nu) + eps), then the (optional) moving average and the weight step.
template <typename T>
inline void apply(T* p, T* buf, T g, T precond, T lr, T beta) {
  T u = g * precond;
  if (buf != nullptr) {
    *buf = beta * *buf + (T(1) - beta) * u;
    u = *buf;
  }
  *p -= lr * u;
}

template <typename T>
void combine_columns(const std::vector<T>& partial, int64_t threads, int64_t cols, T* out,
                     bool accumulate) {
  for (int64_t c = 0; c < cols; ++c) {
    T m = partial[c];
    for (int64_t t = 1; t < threads; ++t) m = std::max(m, partial[t * cols + c]);
    out[c] = accumulate ? out[c] + m : std::max(out[c], m);
  }
}

// SM3-II: nu = min(row[r], col[c]) + g^2; row[r] = max_c nu; col[c] = max_r nu.
// `rows_index` (sparse rows) maps the k-th gradient row to its parameter row; the column
// accumulator then becomes max(old, touched rows' nu), which equals the dense result.
template <typename T>
void sm3_ii_rows(T* p, const T* g, T* row, T* col, T* buf, const int64_t* rows_index,
                 int64_t n_rows, int64_t cols, T lr, T beta, T eps) {
  const int64_t threads = at::get_num_threads();
  std::vector<T> partial(col ? threads * cols : 0, T(0));
  at::parallel_for(0, n_rows, grain_rows(cols), [&](int64_t begin, int64_t end) {
    T* local = col ? partial.data() + at::get_thread_num() * cols : nullptr;
    for (int64_t k = begin; k < end; ++k) {
      const int64_t r = rows_index ? rows_index[k] : k;
      const T* __restrict__ gr = g + k * cols;
      T* __restrict__ pr = p + r * cols;
      const T mu = row[r];
      T row_max = T(0);
      if (buf) {
        T* __restrict__ br = buf + r * cols;
        for (int64_t c = 0; c < cols; ++c) {
          const T nu = (col ? std::min(mu, col[c]) : mu) + gr[c] * gr[c];
          row_max = std::max(row_max, nu);
          if (local) local[c] = std::max(local[c], nu);
          apply(pr + c, br + c, gr[c], T(1) / (std::sqrt(nu) + eps), lr, beta);
        }
      } else if (col) {
        const T* __restrict__ cc = col;
        T* __restrict__ lc = local;
        for (int64_t c = 0; c < cols; ++c) {
          const T nu = std::min(mu, cc[c]) + gr[c] * gr[c];
          row_max = std::max(row_max, nu);
          lc[c] = std::max(lc[c], nu);
          pr[c] -= lr * (gr[c] / (std::sqrt(nu) + eps));
        }
      } else {
        for (int64_t c = 0; c < cols; ++c) {
          const T nu = mu + gr[c] * gr[c];
          row_max = std::max(row_max, nu);
          pr[c] -= lr * (gr[c] / (std::sqrt(nu) + eps));
        }
      }
      row[r] = row_max;
    }
  });
  if (col) combine_columns(partial, threads, cols, col, /*accumulate=*/false);
}

// SM3-I: row[r] += max_c g^2, col[c] += max_r g^2 (first pass), then
// precond = 1 / (sqrt(min(row, col)) + eps) = max of the rows' and columns' inverse roots.
// Both passes run in one parallel region (a barrier between them, not a second thread
// wake-up), each thread on the same rows in both.
template <typename T>
void sm3_i_rows(T* p, const T* g, T* row, T* col, T* buf, const int64_t* rows_index,
                int64_t n_rows, int64_t cols, T lr, T beta, T eps) {
  const int64_t wanted = std::min<int64_t>(
      at::get_num_threads(), std::max<int64_t>(1, n_rows / grain_rows(cols)));
  std::vector<T> partial(col ? wanted * cols : 0, T(0));
  std::vector<T> col_inverse(col ? cols : 0);
#pragma omp parallel num_threads(wanted) if (wanted > 1)
  {
    const int64_t threads = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t begin = n_rows * tid / threads, end = n_rows * (tid + 1) / threads;
    T* local = col ? partial.data() + tid * cols : nullptr;
    for (int64_t k = begin; k < end; ++k) {
      const T* __restrict__ gr = g + k * cols;
      T row_max = T(0);
      if (local) {
        T* __restrict__ lc = local;
        for (int64_t c = 0; c < cols; ++c) {
          const T sq = gr[c] * gr[c];
          row_max = std::max(row_max, sq);
          lc[c] = std::max(lc[c], sq);
        }
      } else {
        for (int64_t c = 0; c < cols; ++c) row_max = std::max(row_max, gr[c] * gr[c]);
      }
      row[rows_index ? rows_index[k] : k] += row_max;
    }
#pragma omp barrier
#pragma omp single
    if (col) {
      combine_columns(partial, threads, cols, col, /*accumulate=*/true);
      for (int64_t c = 0; c < cols; ++c) col_inverse[c] = T(1) / (std::sqrt(col[c]) + eps);
    }  // implicit barrier: every thread sees the new column accumulators
    for (int64_t k = begin; k < end; ++k) {
      const int64_t r = rows_index ? rows_index[k] : k;
      const T* __restrict__ gr = g + k * cols;
      T* __restrict__ pr = p + r * cols;
      const T* __restrict__ ci = col_inverse.data();
      const T row_inverse = T(1) / (std::sqrt(row[r]) + eps);
      if (buf) {
        T* __restrict__ br = buf + r * cols;
        for (int64_t c = 0; c < cols; ++c) {
          const T precond = col ? std::max(row_inverse, ci[c]) : row_inverse;
          apply(pr + c, br + c, gr[c], precond, lr, beta);
        }
      } else if (col) {
        for (int64_t c = 0; c < cols; ++c) pr[c] -= lr * (gr[c] * std::max(row_inverse, ci[c]));
      } else {
        for (int64_t c = 0; c < cols; ++c) pr[c] -= lr * (gr[c] * row_inverse);
      }
    }
  }
}

// A wide matrix (the first hidden layer of a widened parser is 200 x 518,400) would need
// threads x cols of per-thread column maxima when rows are split between threads: megabytes
// that grow with the parameter. Past kColumnSplitBytes of them, the *columns* are split instead,
// in blocks of kColumnBlock: each thread owns its columns (their new accumulators are written
// once every row has read the old ones) and keeps per-row partial maxima, threads x rows.
// Max is exact in any order, so both splits give bit-identical results.
constexpr int64_t kColumnSplitBytes = 1 << 20;
constexpr int64_t kColumnBlock = 2048;

template <typename T>
bool split_by_columns(int64_t n_rows, int64_t cols, const T* col) {
  return col != nullptr && cols > n_rows &&
         at::get_num_threads() * cols * static_cast<int64_t>(sizeof(T)) > kColumnSplitBytes;
}

// Calls block(tid, c0, width) for every kColumnBlock-wide block of columns, the blocks split
// between threads; tid indexes per-thread buffers.
template <typename F>
void for_column_blocks(int64_t cols, const F& block) {
  const int64_t blocks = (cols + kColumnBlock - 1) / kColumnBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    const int64_t tid = at::get_thread_num();
    for (int64_t b = first; b < last; ++b) {
      const int64_t c0 = b * kColumnBlock;
      block(tid, c0, std::min(cols - c0, kColumnBlock));
    }
  });
}

template <typename T>
void combine_rows(const std::vector<T>& partial, int64_t threads, int64_t n_rows,
                  const int64_t* rows_index, T* row, bool accumulate) {
  for (int64_t k = 0; k < n_rows; ++k) {
    T m = partial[k];
    for (int64_t t = 1; t < threads; ++t) m = std::max(m, partial[t * n_rows + k]);
    T& out = row[rows_index ? rows_index[k] : k];
    out = accumulate ? out + m : m;
  }
}

// SM3-II split by columns; the arithmetic of sm3_ii_rows.
template <typename T>
void sm3_ii_cols(T* p, const T* g, T* row, T* col, T* buf, const int64_t* rows_index,
                 int64_t n_rows, int64_t cols, T lr, T beta, T eps) {
  const int64_t threads = at::get_num_threads();
  std::vector<T> partial(threads * n_rows, T(0));
  std::vector<T> new_cols(threads * kColumnBlock);
  for_column_blocks(cols, [&](int64_t tid, int64_t c0, int64_t width) {
    T* local = partial.data() + tid * n_rows;
    const T* __restrict__ cc = col + c0;
    T* __restrict__ nc = new_cols.data() + tid * kColumnBlock;
    std::copy(cc, cc + width, nc);  // max(old, new) as in the row split
    for (int64_t k = 0; k < n_rows; ++k) {
      const int64_t r = rows_index ? rows_index[k] : k;
      const T* __restrict__ gr = g + k * cols + c0;
      T* __restrict__ pr = p + r * cols + c0;
      const T mu = row[r];
      T row_max = local[k];
      if (buf) {
        T* __restrict__ br = buf + r * cols + c0;
        for (int64_t c = 0; c < width; ++c) {
          const T nu = std::min(mu, cc[c]) + gr[c] * gr[c];
          row_max = std::max(row_max, nu);
          nc[c] = std::max(nc[c], nu);
          apply(pr + c, br + c, gr[c], T(1) / (std::sqrt(nu) + eps), lr, beta);
        }
      } else {
        for (int64_t c = 0; c < width; ++c) {
          const T nu = std::min(mu, cc[c]) + gr[c] * gr[c];
          row_max = std::max(row_max, nu);
          nc[c] = std::max(nc[c], nu);
          pr[c] -= lr * (gr[c] / (std::sqrt(nu) + eps));
        }
      }
      local[k] = row_max;
    }
    std::copy(nc, nc + width, col + c0);
  });
  combine_rows(partial, threads, n_rows, rows_index, row, /*accumulate=*/false);
}

// SM3-I split by columns; the arithmetic of sm3_i_rows.
template <typename T>
void sm3_i_cols(T* p, const T* g, T* row, T* col, T* buf, const int64_t* rows_index,
                int64_t n_rows, int64_t cols, T lr, T beta, T eps) {
  const int64_t threads = at::get_num_threads();
  std::vector<T> partial(threads * n_rows, T(0));
  std::vector<T> blocks_buf(threads * kColumnBlock);  // column maxima, then column inverses
  for_column_blocks(cols, [&](int64_t tid, int64_t c0, int64_t width) {
    T* local = partial.data() + tid * n_rows;
    T* __restrict__ cm = blocks_buf.data() + tid * kColumnBlock;
    std::fill(cm, cm + width, T(0));
    for (int64_t k = 0; k < n_rows; ++k) {
      const T* __restrict__ gr = g + k * cols + c0;
      T row_max = local[k];
      for (int64_t c = 0; c < width; ++c) {
        const T sq = gr[c] * gr[c];
        row_max = std::max(row_max, sq);
        cm[c] = std::max(cm[c], sq);
      }
      local[k] = row_max;
    }
    for (int64_t c = 0; c < width; ++c) col[c0 + c] += cm[c];
  });
  combine_rows(partial, threads, n_rows, rows_index, row, /*accumulate=*/true);
  for_column_blocks(cols, [&](int64_t tid, int64_t c0, int64_t width) {
    T* __restrict__ ci = blocks_buf.data() + tid * kColumnBlock;
    for (int64_t c = 0; c < width; ++c) ci[c] = T(1) / (std::sqrt(col[c0 + c]) + eps);
    for (int64_t k = 0; k < n_rows; ++k) {
      const int64_t r = rows_index ? rows_index[k] : k;
      const T* __restrict__ gr = g + k * cols + c0;
      T* __restrict__ pr = p + r * cols + c0;
      const T row_inverse = T(1) / (std::sqrt(row[r]) + eps);
      if (buf) {
        T* __restrict__ br = buf + r * cols + c0;
        for (int64_t c = 0; c < width; ++c) {
          apply(pr + c, br + c, gr[c], std::max(row_inverse, ci[c]), lr, beta);
        }
      } else {
        for (int64_t c = 0; c < width; ++c) pr[c] -= lr * (gr[c] * std::max(row_inverse, ci[c]));
      }
    }
  });
}

// Singleton cover (both variants are Adagrad): acc += g^2; precond = 1 / (sqrt(acc) + eps).
template <typename T>
void adagrad_rows(T* p, const T* g, T* acc, T* buf, const int64_t* rows_index, int64_t n_rows,
                  int64_t cols, T lr, T beta, T eps) {
  at::parallel_for(0, n_rows, grain_rows(cols), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t r = rows_index ? rows_index[k] : k;
      const T* __restrict__ gr = g + k * cols;
      T* __restrict__ pr = p + r * cols;
      T* __restrict__ ar = acc + r * cols;
      T* __restrict__ br = buf ? buf + r * cols : nullptr;
      for (int64_t c = 0; c < cols; ++c) {
        ar[c] += gr[c] * gr[c];
        if (br) {
          apply(pr + c, br + c, gr[c], T(1) / (std::sqrt(ar[c]) + eps), lr, beta);
        } else {
          pr[c] -= lr * (gr[c] / (std::sqrt(ar[c]) + eps));
        }
      }
    }
  });
}

}  // namespace
