// The fused across-channel LRN for CPUs: forward and backward each read their inputs once and write one output.
//
// b_c = a_c * q_c, q_c = s_c^-beta, s_c = k + alpha * sum of a_j^2 for j in [c - before, c + after] (see
// docs/lrn-conventions.md). The backward recomputes s and q from the input instead of storing them, which costs
// arithmetic but saves two tensors of memory traffic:
//   dL/da_i = g_i q_i - 2 alpha beta a_i * sum over j in [i - after, i + before] of g_j a_j q_j / s_j.
//
// Work is split into tiles of TILE pixels of one image, all channels. A tile is gathered into a channel-major float
// buffer (TILE pixels contiguous per channel) so that every loop below runs over pixels and vectorizes, whatever the
// tensor's memory format; window sums are blocked sums in double (see sweep). Storage may be bf16 or fp16;
// arithmetic is in float (in double for double tensors).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t TILE = 32;

enum class Power { ThreeQuarters, Half, One, General };

template <Power P, typename acc_t>
inline acc_t negative_power(acc_t s, acc_t beta) {
  if constexpr (P == Power::ThreeQuarters) {
    acc_t r = acc_t(1) / std::sqrt(s);  // s^-0.75 = s^-0.5 * (s^-0.5)^0.5
    return r * std::sqrt(r);
  } else if constexpr (P == Power::Half) {
    return acc_t(1) / std::sqrt(s);
  } else if constexpr (P == Power::One) {
    return acc_t(1) / s;
  } else {
    return std::pow(s, -beta);
  }
}

// q = s^-beta and q / s, from one division: the backward needs both, and a second division per element cost
// more than the multiplications that replace it.
template <Power P, typename acc_t>
inline void power_and_quotient(acc_t s, acc_t beta, acc_t& q, acc_t& q_over_s) {
  if constexpr (P == Power::General) {
    q = std::pow(s, -beta);
    q_over_s = q / s;
  } else {
    const acc_t r = acc_t(1) / (P == Power::One ? s : std::sqrt(s));  // s^-1 or s^-0.5
    q = P == Power::ThreeQuarters ? r * std::sqrt(r) : r;
    q_over_s = P == Power::One ? r * r : q * r * r;
  }
}

Power power_of(double beta) {
  if (beta == 0.75) return Power::ThreeQuarters;
  if (beta == 0.5) return Power::Half;
  if (beta == 1.0) return Power::One;
  return Power::General;
}

// Loads and stores between storage and arithmetic types. bf16 is converted by bit operations the compiler can
// vectorize (c10's own conversion is a scalar call per element): a bf16 is the top half of a float, and a float
// rounds to nearest-even bf16 by adding 0x7fff plus the lowest kept bit; NaN stays NaN.
template <typename acc_t, typename scalar_t>
inline acc_t load(scalar_t v) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    const uint32_t bits = uint32_t(v.x) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  } else {
    return static_cast<acc_t>(v);
  }
}

template <typename scalar_t, typename acc_t>
inline scalar_t store(acc_t v) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    return c10::BFloat16(static_cast<uint16_t>(v != v ? 0x7fc0u : rounded), c10::BFloat16::from_bits());
  } else {
    return static_cast<scalar_t>(v);
  }
}

// Where element (n, c, pixel p) of a 4-D tensor lies, for contiguous and channels_last tensors alike.
struct Layout {
  int64_t N, C, HW, sN, sC, sP;
  bool channels_last;
};

Layout layout_of(const at::Tensor& x) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const bool last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  return last ? Layout{N, C, HW, HW * C, 1, C, true} : Layout{N, C, HW, C * HW, HW, 1, false};
}

#if defined(__AVX512F__)
// 16 stored values as 16 floats, and back, rounding as load() and store() do (bf16 to nearest even, NaN kept).
template <typename scalar_t>
inline __m512 load16(const scalar_t* p) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return _mm512_loadu_ps(p);
  } else {
    const __m256i half = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>)
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
    else
      return _mm512_cvtph_ps(half);
  }
}

template <typename scalar_t>
inline void store16(scalar_t* p, __m512 v) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    _mm512_storeu_ps(p, v);
  } else {
    __m256i half;
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
      const __m512i bits = _mm512_castps_si512(v);
      const __m512i lowest_kept = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
      const __m512i bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lowest_kept);
      __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, bias), 16);
      rounded = _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
      half = _mm512_cvtepi32_epi16(rounded);
    } else {
      half = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), half);
  }
}

// Transposes 16 rows of 16 floats in registers: r[i][j] becomes r[j][i]. Interleave 32-bit then 64-bit elements
// of row pairs (each 128-bit lane then holds one column of 4 rows), then gather the four lanes of each column.
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int g = 0; g < 16; g += 4) {  // u[g + j], lane L: column 4L + j of rows g .. g + 3
    const auto pd = [](__m512 v) { return _mm512_castps_pd(v); };
    u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[g]), pd(t[g + 2])));
    u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[g]), pd(t[g + 2])));
    u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[g + 1]), pd(t[g + 3])));
    u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[g + 1]), pd(t[g + 3])));
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 low01 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);  // lanes 0, 1 of rows 0-3, then of rows 4-7
    const __m512 high01 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
    const __m512 low23 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
    const __m512 high23 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
    r[j] = _mm512_shuffle_f32x4(low01, low23, 0x88);
    r[4 + j] = _mm512_shuffle_f32x4(low01, low23, 0xDD);
    r[8 + j] = _mm512_shuffle_f32x4(high01, high23, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(high01, high23, 0xDD);
  }
}
#endif

// Copies between a channels_last tile (count pixels of `channels` values, `stride` apart) and its channel-major
// buffer, in 16x16 blocks transposed in registers where the build targets AVX-512 and the arithmetic is float;
// returns how many pixels and channels the blocks covered, the rest being left to the caller's element loop.
// channels_last used to sum each pixel's channels by doubling instead: faster at small n (fp32 128x64x32x32, kernel
// calls alone: 29.2 ms at n 1 against 38.2 for the tiles) but growing with n (39.0 at n 21 against 42.6; bf16 10.1
// to 19.1 against 15.5 to 17.2). The tiles trade that speed for one arithmetic path, the same bits in both layouts
// and a cost flat in n. (Copied element by element the tiles took 43.1-44.5 ms.) docs/benchmarks.md has the figures.
struct Covered {
  int64_t pixels, channels;
};

template <bool ToBuffer, typename row_t, typename buf_t>  // row_t, buf_t: the source's element type is const
Covered transpose_blocks(row_t* rows, int64_t stride, int64_t count, int64_t channels, buf_t* buf) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<std::remove_const_t<buf_t>, float>) {
    const Covered done{count / 16 * 16, channels / 16 * 16};
    __m512 r[16];
    for (int64_t t0 = 0; t0 < done.pixels; t0 += 16)
      for (int64_t c0 = 0; c0 < done.channels; c0 += 16) {
        if constexpr (ToBuffer) {
          for (int i = 0; i < 16; ++i) r[i] = load16(rows + (t0 + i) * stride + c0);
          transpose16(r);
          for (int j = 0; j < 16; ++j) _mm512_storeu_ps(buf + (c0 + j) * TILE + t0, r[j]);
        } else {
          for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(buf + (c0 + j) * TILE + t0);
          transpose16(r);
          for (int i = 0; i < 16; ++i) store16(rows + (t0 + i) * stride + c0, r[i]);
        }
      }
    return done;
  }
#endif
  return {0, 0};
}

// Copy a tile (pixels p0 .. p0 + count of image n, all channels) into buf[c * TILE + t], zero-filling the tail.
template <typename scalar_t, typename acc_t>
void gather(const scalar_t* src, const Layout& L, int64_t n, int64_t p0, int64_t count, acc_t* buf) {
  const scalar_t* base = src + n * L.sN + p0 * L.sP;
  if (count < TILE) std::fill(buf, buf + L.C * TILE, acc_t(0));
  if (L.channels_last) {
    const Covered done = transpose_blocks<true>(base, L.sP, count, L.C, buf);
    for (int64_t t = 0; t < count; ++t)  // read each pixel's channels in memory order
      for (int64_t c = t < done.pixels ? done.channels : 0; c < L.C; ++c)
        buf[c * TILE + t] = load<acc_t>(base[t * L.sP + c]);
  } else {
    for (int64_t c = 0; c < L.C; ++c)
      for (int64_t t = 0; t < count; ++t) buf[c * TILE + t] = load<acc_t>(base[c * L.sC + t]);
  }
}

template <typename scalar_t, typename acc_t>
void scatter(const acc_t* buf, const Layout& L, int64_t n, int64_t p0, int64_t count, scalar_t* dst) {
  scalar_t* base = dst + n * L.sN + p0 * L.sP;
  if (L.channels_last) {
    const Covered done = transpose_blocks<false>(base, L.sP, count, L.C, buf);
    for (int64_t t = 0; t < count; ++t)
      for (int64_t c = t < done.pixels ? done.channels : 0; c < L.C; ++c)
        base[t * L.sP + c] = store<scalar_t>(buf[c * TILE + t]);
  } else {
    for (int64_t c = 0; c < L.C; ++c)
      for (int64_t t = 0; t < count; ++t) base[c * L.sC + t] = store<scalar_t>(buf[c * TILE + t]);
  }
}

// Calls body(c, sums) for c = 0 .. C-1 in order, sums[t] being the sum of rows[j * TILE + t] over j in
// [c - lo, c + hi] within 0 .. C-1, accumulated in double; `suffix` is scratch of C * TILE doubles.
//
// Blocked sums (van Herk / Gil-Werman): the channels are cut into blocks of w = lo + hi + 1 from channel 0, so a
// window holds at most the tail of one block and the head of the next; its sum is that block's suffix sum from the
// window's start plus the next block's prefix sum up to its end. Each is built by adding one channel to the sum of
// its neighbour, so the cost is three additions per element whatever w, and nothing is ever subtracted: a sum's
// error is that of a direct sum of the window's values, whatever has left it. (A running sum, adding the channel
// entering the window and subtracting the one leaving it, keeps the rounding residue of every value that has passed
// through: after a 1e4 left the window, a 1e-4 neighbour's output was 0.36% off; on normal inputs times 10^U{-3..4}
// (n 5, alpha 1, k 1e-5) outputs were up to 3e-5 off in float64 and 8e-5 in float32; blocked, 5e-16 and 2.5e-7.)
template <typename acc_t, typename Body>
inline void sweep(const acc_t* __restrict__ rows, double* __restrict__ suffix, int64_t C, int64_t lo, int64_t hi,
                  Body body) {
  const int64_t w = lo + hi + 1;
  double running[TILE];  // held in registers: reloading the row just stored stalled on store forwarding
  for (int64_t j = C - 1; j >= 0; --j) {  // suffix[j]: rows j .. the end of j's block (or C - 1)
    const acc_t* __restrict__ row = rows + j * TILE;
    double* __restrict__ out = suffix + j * TILE;
    const bool restart = (j + 1) % w == 0 || j + 1 == C;
#pragma omp simd
    for (int64_t t = 0; t < TILE; ++t) {
      running[t] = restart ? double(row[t]) : running[t] + row[t];
      out[t] = running[t];
    }
  }
  double prefix[TILE], both[TILE];  // prefix: rows from the start of `last`'s block to `last`
  int64_t last = -1;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t end = std::min(c + hi, C - 1);
    for (; last < end; ++last) {
      const acc_t* __restrict__ entering = rows + (last + 1) * TILE;
      const bool restart = (last + 1) % w == 0;
#pragma omp simd
      for (int64_t t = 0; t < TILE; ++t) prefix[t] = restart ? double(entering[t]) : prefix[t] + entering[t];
    }
    // The window [first, end] splits at the first block start at or after `first`: [first, boundary) is the tail
    // of the block before, [boundary, end] the head of the block that prefix covers.
    const int64_t first = std::max<int64_t>(c - lo, 0), boundary = (first + w - 1) / w * w;
    const double* __restrict__ tail = suffix + first * TILE;
    if (first == boundary) {
      body(c, prefix);
    } else if (boundary > end) {
      body(c, tail);
    } else {
#pragma omp simd
      for (int64_t t = 0; t < TILE; ++t) both[t] = tail[t] + prefix[t];
      body(c, both);
    }
  }
}

template <Power P, typename scalar_t, typename acc_t>
void forward_tiles(const scalar_t* x, scalar_t* y, const Layout& L, acc_t k, acc_t alpha, acc_t beta, int64_t before,
                   int64_t after) {
  const int64_t tiles = (L.HW + TILE - 1) / TILE;
  at::parallel_for(0, L.N * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xb(L.C * TILE), sq(L.C * TILE), yb(L.C * TILE);
    std::vector<double> suffix(L.C * TILE);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t n = index / tiles, p0 = (index % tiles) * TILE, count = std::min(TILE, L.HW - p0);
      gather(x, L, n, p0, count, xb.data());
#pragma omp simd
      for (int64_t i = 0; i < L.C * TILE; ++i) sq[i] = xb[i] * xb[i];
      sweep(sq.data(), suffix.data(), L.C, before, after, [&](int64_t c, const double* sums) {
        const acc_t* __restrict__ a = xb.data() + c * TILE;
        acc_t* __restrict__ b = yb.data() + c * TILE;
#pragma omp simd
        for (int64_t t = 0; t < TILE; ++t) b[t] = a[t] * negative_power<P>(k + alpha * acc_t(sums[t]), beta);
      });
      scatter(yb.data(), L, n, p0, count, y);
    }
  });
}

template <Power P, typename scalar_t, typename acc_t>
void backward_tiles(const scalar_t* x, const scalar_t* g, scalar_t* dx, const Layout& L, acc_t k, acc_t alpha,
                    acc_t beta, int64_t before, int64_t after) {
  const int64_t tiles = (L.HW + TILE - 1) / TILE;
  const acc_t two_alpha_beta = 2 * alpha * beta;
  at::parallel_for(0, L.N * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xb(L.C * TILE), gb(L.C * TILE), sq(L.C * TILE), qb(L.C * TILE), tb(L.C * TILE);
    std::vector<double> suffix(L.C * TILE);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t n = index / tiles, p0 = (index % tiles) * TILE, count = std::min(TILE, L.HW - p0);
      gather(x, L, n, p0, count, xb.data());
      gather(g, L, n, p0, count, gb.data());
#pragma omp simd
      for (int64_t i = 0; i < L.C * TILE; ++i) sq[i] = xb[i] * xb[i];
      sweep(sq.data(), suffix.data(), L.C, before, after, [&](int64_t c, const double* sums) {  // q_j and g_j a_j q_j / s_j
        const int64_t o = c * TILE;
#pragma omp simd
        for (int64_t t = 0; t < TILE; ++t) {
          acc_t q, q_over_s;
          power_and_quotient<P>(k + alpha * acc_t(sums[t]), beta, q, q_over_s);
          qb[o + t] = q;
          tb[o + t] = gb[o + t] * xb[o + t] * q_over_s;
        }
      });
      // The mirrored window: the j whose window holds c. sq is free by now and receives dL/da.
      sweep(tb.data(), suffix.data(), L.C, after, before, [&](int64_t c, const double* sums) {
        const int64_t o = c * TILE;
#pragma omp simd
        for (int64_t t = 0; t < TILE; ++t)
          sq[o + t] = gb[o + t] * qb[o + t] - two_alpha_beta * xb[o + t] * acc_t(sums[t]);
      });
      scatter(sq.data(), L, n, p0, count, dx);
    }
  });
}

template <typename Body>
void dispatch_power(double beta, Body body) {
  switch (power_of(beta)) {
    case Power::ThreeQuarters: body(std::integral_constant<Power, Power::ThreeQuarters>{}); break;
    case Power::Half: body(std::integral_constant<Power, Power::Half>{}); break;
    case Power::One: body(std::integral_constant<Power, Power::One>{}); break;
    default: body(std::integral_constant<Power, Power::General>{});
  }
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 4, name, " must be 4-D (N, C, H, W), got ", t.dim(), "-D");
  TORCH_CHECK(t.is_contiguous() || t.is_contiguous(at::MemoryFormat::ChannelsLast), name,
              " must be contiguous or channels_last");
}

at::Tensor forward(const at::Tensor& x, double k, double alpha, double beta, int64_t before, int64_t after) {
  check(x, "x");
  at::Tensor y = at::empty_like(x);  // keeps x's memory format
  const Layout L = layout_of(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "lrnbn_lrn_forward", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    dispatch_power(beta, [&](auto power) {
      constexpr Power p = decltype(power)::value;
      forward_tiles<p, scalar_t, acc_t>(x.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), L, k, alpha, beta,
                                        before, after);
    });
  });
  return y;
}

at::Tensor backward(const at::Tensor& x, const at::Tensor& grad, double k, double alpha, double beta, int64_t before,
                    int64_t after) {
  check(x, "x");
  // The gradient arrives in whatever layout autograd made; give it x's, so one Layout addresses both.
  const at::Tensor g = grad.contiguous(x.suggest_memory_format()).to(x.scalar_type());
  at::Tensor dx = at::empty_like(x);
  const Layout L = layout_of(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "lrnbn_lrn_backward", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    dispatch_power(beta, [&](auto power) {
      constexpr Power p = decltype(power)::value;
      backward_tiles<p, scalar_t, acc_t>(x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
                                         dx.data_ptr<scalar_t>(), L, k, alpha, beta, before, after);
    });
  });
  return dx;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused LRN forward (CPU)");
  m.def("backward", &backward, "fused LRN backward (CPU)");
}
