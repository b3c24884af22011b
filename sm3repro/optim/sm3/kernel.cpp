// One-pass SM3 steps on CPU for sm3repro.optim.sm3.fused (built with torch's cpp_extension):
// the entry points and their bindings. The arithmetic per cover is in kernel_updates.cpp, which
// sm3repro.optim.sm3.fused compiles with this file as one unit (that file first).
//
// Python calls every function with named (keyword-only) arguments, and names the cover and the
// variant as Python does ("rows"/"dims"/"singleton", "i"/"ii"): nothing is mirrored by position
// or by integer code (the bindings are at the end of this file).

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <string>
#include <vector>

// Sum the duplicate rows of an uncoalesced row-sparse gradient (indices (n,) or (1, n), values
// (n, ...)): returns (unique row indices in order of first appearance, their summed values as
// (unique, cols)). One pass with a row -> slot map, no sort (torch's coalesce sorts: ~10x slower
// at batch sizes). The map is kept per thread and only its touched entries are reset, so a call
// costs O(n), not O(rows) (a 16k-word vocabulary's map is 130 KB to fill each step otherwise).
std::vector<at::Tensor> sum_duplicate_rows(at::Tensor indices, at::Tensor values, int64_t rows) {
  TORCH_CHECK(indices.scalar_type() == at::kLong && indices.dim() >= 1 && indices.dim() <= 2 &&
                  (indices.dim() == 1 || indices.size(0) == 1),
              "indices: (n,) or (1, n) int64");
  const int64_t n = indices.size(-1);
  TORCH_CHECK(values.dim() >= 1 && values.size(0) == n, "values: one row per index");
  indices = indices.contiguous();
  values = values.contiguous();
  const int64_t cols = n > 0 ? values.numel() / n : (values.dim() > 1 ? values[0].numel() : 1);
  const int64_t* idx = indices.data_ptr<int64_t>();
  thread_local std::vector<int64_t> slot_of_row;
  if (static_cast<int64_t>(slot_of_row.size()) < rows) slot_of_row.assign(rows, -1);
  std::vector<int64_t> first;  // the first position of each unique row
  std::vector<int64_t> slot(n);
  first.reserve(n);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t r = idx[k];
    if (r < 0 || r >= rows) {
      for (int64_t f : first) slot_of_row[idx[f]] = -1;  // leave the map clean
      TORCH_CHECK(false, "row index ", r, " out of range for ", rows, " rows");
    }
    if (slot_of_row[r] < 0) {
      slot_of_row[r] = static_cast<int64_t>(first.size());
      first.push_back(k);
    }
    slot[k] = slot_of_row[r];
  }
  const int64_t unique = static_cast<int64_t>(first.size());
  at::Tensor out_index = at::empty({unique}, indices.options());
  at::Tensor out_values = at::zeros({unique, cols}, values.options());
  int64_t* oi = out_index.data_ptr<int64_t>();
  for (int64_t u = 0; u < unique; ++u) {
    oi[u] = idx[first[u]];
    slot_of_row[oi[u]] = -1;
  }
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "sum_duplicate_rows", [&] {
    const scalar_t* v = values.data_ptr<scalar_t>();
    scalar_t* o = out_values.data_ptr<scalar_t>();
    for (int64_t k = 0; k < n; ++k) {
      scalar_t* __restrict__ dst = o + slot[k] * cols;
      const scalar_t* __restrict__ src = v + k * cols;
      for (int64_t c = 0; c < cols; ++c) dst[c] += src[c];
    }
  });
  return {out_index, out_values};
}

// One parameter's step. Every tensor is the real (contiguous) tensor, read as a (rows, cols)
// matrix with the given `cols` (no views: making them from Python cost more than stepping a
// bias). grad: the dense gradient, or with `rows_index` ((n,) int64, distinct rows) the n
// gradient rows of those parameter rows. cover: "rows" (`row_acc` has one number per row, no
// `col_acc`), "dims" (`row_acc` and `col_acc` of a matrix) or "singleton" (`row_acc` is
// full-size). momentum: the moving average's beta (used only with `buf`).
void sm3_step(at::Tensor param, at::Tensor grad, at::Tensor row_acc,
              c10::optional<at::Tensor> col_acc, c10::optional<at::Tensor> buf,
              c10::optional<at::Tensor> rows_index, std::string cover, int64_t cols,
              std::string variant, double lr, double momentum, double eps) {
  const Cover kind = parse_cover(cover);
  const bool variant_ii = is_variant_ii(variant);
  check_same(param, param, "param");
  check_same(grad, param, "grad");
  check_same(row_acc, param, "accumulator");
  TORCH_CHECK(cols > 0 && param.numel() % cols == 0, "cols must divide the parameter's size");
  const int64_t param_rows = param.numel() / cols;
  TORCH_CHECK(row_acc.numel() == (kind == Cover::kSingleton ? param.numel() : param_rows),
              "the row accumulator does not fit the parameter");
  const bool has_col = col_acc.has_value() && col_acc->defined();
  TORCH_CHECK(has_col == (kind == Cover::kDims),
              "a column accumulator goes with the dims cover only");
  if (has_col) {
    check_same(*col_acc, param, "column accumulator");
    TORCH_CHECK(col_acc->numel() == cols, "the column accumulator has one number per column");
  }
  const bool has_buf = buf.has_value() && buf->defined();
  if (has_buf) {
    check_same(*buf, param, "momentum buffer");
    TORCH_CHECK(buf->numel() == param.numel(), "the momentum buffer has the parameter's size");
  }
  const bool sparse = rows_index.has_value() && rows_index->defined();
  int64_t n = param_rows;
  if (sparse) {
    TORCH_CHECK(rows_index->scalar_type() == at::kLong && rows_index->is_contiguous(),
                "rows_index must be contiguous int64");
    n = rows_index->numel();
    TORCH_CHECK(grad.numel() == n * cols, "one gradient row per index");
  } else {
    TORCH_CHECK(grad.numel() == param.numel(), "a dense gradient has the parameter's size");
  }
  const int64_t* index = sparse ? rows_index->data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "sm3_step", [&] {
    using T = scalar_t;
    T* p = param.data_ptr<T>();
    const T* g = grad.data_ptr<T>();
    T* r = row_acc.data_ptr<T>();
    T* c = has_col ? col_acc->data_ptr<T>() : nullptr;
    T* b = has_buf ? buf->data_ptr<T>() : nullptr;
    const T beta = T(momentum);
    if (kind == Cover::kSingleton) {
      adagrad_rows<T>(p, g, r, b, index, n, cols, T(lr), beta, T(eps));
    } else if (split_by_columns<T>(n, cols, c)) {
      (variant_ii ? sm3_ii_cols<T> : sm3_i_cols<T>)(p, g, r, c, b, index, n, cols, T(lr), beta,
                                                    T(eps));
    } else if (variant_ii) {
      sm3_ii_rows<T>(p, g, r, c, b, index, n, cols, T(lr), beta, T(eps));
    } else {
      sm3_i_rows<T>(p, g, r, c, b, index, n, cols, T(lr), beta, T(eps));
    }
  });
}

// Dense steps of many parameters in one call (like torch's foreach paths): one crossing from
// Python per parameter group instead of one per parameter.
void sm3_step_many(std::vector<at::Tensor> params, std::vector<at::Tensor> grads,
                   std::vector<at::Tensor> row_accs,
                   std::vector<c10::optional<at::Tensor>> col_accs,
                   std::vector<c10::optional<at::Tensor>> bufs, std::vector<std::string> covers,
                   std::vector<int64_t> widths, std::string variant, double lr, double momentum,
                   double eps) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && row_accs.size() == n && col_accs.size() == n &&
                  bufs.size() == n && covers.size() == n && widths.size() == n,
              "sm3_step_many: one entry per parameter in every list");
  for (size_t i = 0; i < n; ++i) {
    sm3_step(params[i], grads[i], row_accs[i], col_accs[i], bufs[i], c10::nullopt, covers[i],
             widths[i], variant, lr, momentum, eps);
  }
}

// The bindings (load_inline is given no `functions`, so it generates none): keyword-only
// arguments, each named. torch::wrap_pybind_function turns a failed TORCH_CHECK into a
// RuntimeError, as the bindings load_inline generates do.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sum_duplicate_rows", torch::wrap_pybind_function(sum_duplicate_rows),
        "Sum the duplicate rows of a row-sparse gradient", pybind11::kw_only(),
        pybind11::arg("indices"), pybind11::arg("values"), pybind11::arg("rows"));
  m.def("sm3_step", torch::wrap_pybind_function(sm3_step), "One parameter's SM3 step",
        pybind11::kw_only(), pybind11::arg("param"), pybind11::arg("grad"),
        pybind11::arg("row_acc"), pybind11::arg("col_acc"), pybind11::arg("buf"),
        pybind11::arg("rows_index"), pybind11::arg("cover"), pybind11::arg("cols"),
        pybind11::arg("variant"), pybind11::arg("lr"), pybind11::arg("momentum"),
        pybind11::arg("eps"));
  m.def("sm3_step_many", torch::wrap_pybind_function(sm3_step_many),
        "Dense SM3 steps of many parameters", pybind11::kw_only(), pybind11::arg("params"),
        pybind11::arg("grads"), pybind11::arg("row_accs"), pybind11::arg("col_accs"),
        pybind11::arg("bufs"), pybind11::arg("covers"), pybind11::arg("widths"),
        pybind11::arg("variant"), pybind11::arg("lr"), pybind11::arg("momentum"),
        pybind11::arg("eps"));
}
