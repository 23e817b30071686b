// The fused across-channel LRN for CPUs: forward and backward each read their inputs once and write one output.
//
// b_c = a_c * q_c, q_c = s_c^-beta, s_c = k + alpha * sum of a_j^2 for j in [c - before, c + after] (see
// docs/lrn-conventions.md). The backward recomputes s and q from the input instead of storing them, which costs
// arithmetic but saves two tensors of memory traffic:
//   dL/da_i = g_i q_i - 2 alpha beta a_i * sum over j in [i - after, i + before] of g_j a_j q_j / s_j.
//
// Work is split into tiles of TILE pixels of one image, all channels (TILE 128, 64 or 32: see tile_width). A tile
// is gathered into a channel-major float buffer (TILE pixels contiguous per channel) so that every loop below runs
// over pixels and vectorizes, whatever the tensor's memory format; window sums are blocked sums (see sweep), in
// double, or in float for bf16 and fp16 storage (see sum_type). Storage may be bf16 or fp16; arithmetic is in float
// (in double for double tensors).
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

constexpr int64_t AHEAD = 2;  // tiles: 1 and 4 were no faster

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

#if defined(__AVX512F__)
// x^-0.5 from the hardware's 14-bit estimate and one Newton step, y (1.5 - 0.5 x y^2).
inline __m512 rsqrt16(__m512 x) {
  const __m512 y = _mm512_rsqrt14_ps(x);
  const __m512 half_xy = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), y);
  return _mm512_mul_ps(y, _mm512_fnmadd_ps(half_xy, y, _mm512_set1_ps(1.5f)));
}

// k + alpha * sums[0 .. 16), computed in the sums' type and then rounded to float: a double sum above float's range
// times a small alpha may still be a float.
inline __m512 scaled_sums16(const float* p, float k, float alpha) {
  return _mm512_fmadd_ps(_mm512_set1_ps(alpha), _mm512_loadu_ps(p), _mm512_set1_ps(k));
}
inline __m512 scaled_sums16(const double* p, float k, float alpha) {
  const __m512d kd = _mm512_set1_pd(k), alphad = _mm512_set1_pd(alpha);
  const __m256 low = _mm512_cvtpd_ps(_mm512_fmadd_pd(alphad, _mm512_loadu_pd(p), kd));
  const __m256 high = _mm512_cvtpd_ps(_mm512_fmadd_pd(alphad, _mm512_loadu_pd(p + 8), kd));
  return _mm512_insertf32x8(_mm512_castps256_ps512(low), high, 1);
}
#endif

// For t < TILE, with s = k + alpha * sums[t] (in sum_t, then rounded): q[t] = s^-beta and, where Quotient,
// qs[t] = q[t] / s.
//
// In float on AVX-512, beta 0.75, 0.5 and 1 use the hardware's estimates refined by one Newton step,
// s^-0.75 = (s^-0.5)^2 (s^-0.5)^-0.5, in place of two square roots and a division: those were the forward's
// whole arithmetic cost (perf: ~70% of its own time, waiting on vsqrtps and vdivps). A few ulps (fp32 values stay
// within the 1e-6 of float64 that tests/test_lrn_exact.py holds them to); sums outside [2^-100, 2^100] (zero,
// subnormal, huge, inf or NaN) take the exact path.
template <int64_t TILE, Power P, bool Quotient, typename sum_t, typename acc_t>
inline void row_powers(const sum_t* sums, acc_t k, acc_t alpha, acc_t beta, acc_t* q, acc_t* qs) {
  int64_t t = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<acc_t, float> && P != Power::General) {
    for (; t < TILE; t += 16) {
      const __m512 s = scaled_sums16(sums + t, k, alpha);
      const __mmask16 normal = _mm512_cmp_ps_mask(s, _mm512_set1_ps(0x1p-100f), _CMP_GE_OQ) &
                               _mm512_cmp_ps_mask(s, _mm512_set1_ps(0x1p100f), _CMP_LE_OQ);
      if (normal != 0xFFFF) break;
      __m512 r, power;  // r: s^-1 (P One) or s^-0.5
      if constexpr (P == Power::One) {
        const __m512 y = _mm512_rcp14_ps(s);  // one Newton step for 1 / s: y (2 - s y)
        r = power = _mm512_mul_ps(y, _mm512_fnmadd_ps(s, y, _mm512_set1_ps(2.0f)));
      } else {
        r = rsqrt16(s);
        power = P == Power::Half ? r : _mm512_mul_ps(_mm512_mul_ps(r, r), rsqrt16(r));
      }
      _mm512_storeu_ps(q + t, power);
      if constexpr (Quotient)
        _mm512_storeu_ps(qs + t, P == Power::One ? _mm512_mul_ps(r, r) : _mm512_mul_ps(power, _mm512_mul_ps(r, r)));
    }
  }
#endif
  for (; t < TILE; ++t) {
    const acc_t s = acc_t(sum_t(k) + sum_t(alpha) * sums[t]);
    if constexpr (Quotient) {
      power_and_quotient<P>(s, beta, q[t], qs[t]);
    } else {
      q[t] = negative_power<P>(s, beta);
    }
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

template <int64_t TILE, bool ToBuffer, typename row_t, typename buf_t>  // row_t, buf_t: the source's is const
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

// Asks for the tile AHEAD tiles on while this one is worked: the hardware prefetcher neither follows a contiguous
// tile's C rows of TILE pixels (HW apart) nor fetches a channels_last tile's C * TILE values soon enough. Measured
// (kernel calls alone, 1 thread, 64x64x32x32, n 5, AMD EPYC): bf16 contiguous forward 4.3 -> 2.7 ms, backward 7.3 ->
// 4.6 ms; bf16 channels_last 4.1 + 7.1 -> 3.4 + 5.7 ms. A prefetch past the tensor's end is harmless.
template <int64_t TILE, bool Write, typename scalar_t>
inline void prefetch_ahead(const scalar_t* base, const Layout& L) {
  const char* next = reinterpret_cast<const char*>(base + AHEAD * TILE * L.sP);
  const int64_t rows = L.channels_last ? 1 : L.C, row_bytes = TILE * (L.channels_last ? L.C : 1) * sizeof(scalar_t);
  for (int64_t c = 0; c < rows; ++c)
    for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(next + c * L.sC * sizeof(scalar_t) + b, Write, 2);
}

// Copy a tile (pixels p0 .. p0 + count of image n, all channels) into buf[c * TILE + t], zero-filling the tail.
template <int64_t TILE, typename scalar_t, typename acc_t>
void gather(const scalar_t* src, const Layout& L, int64_t n, int64_t p0, int64_t count, acc_t* buf) {
  const scalar_t* base = src + n * L.sN + p0 * L.sP;
  prefetch_ahead<TILE, false>(base, L);
  if (count < TILE) std::fill(buf, buf + L.C * TILE, acc_t(0));
  if (L.channels_last) {
    const Covered done = transpose_blocks<TILE, true>(base, L.sP, count, L.C, buf);
    for (int64_t t = 0; t < count; ++t)  // read each pixel's channels in memory order
      for (int64_t c = t < done.pixels ? done.channels : 0; c < L.C; ++c)
        buf[c * TILE + t] = load<acc_t>(base[t * L.sP + c]);
  } else {
    for (int64_t c = 0; c < L.C; ++c)
      for (int64_t t = 0; t < count; ++t) buf[c * TILE + t] = load<acc_t>(base[c * L.sC + t]);
  }
}

template <int64_t TILE, typename scalar_t, typename acc_t>
void scatter(const acc_t* buf, const Layout& L, int64_t n, int64_t p0, int64_t count, scalar_t* dst) {
  scalar_t* base = dst + n * L.sN + p0 * L.sP;
  prefetch_ahead<TILE, true>(base, L);
  if (L.channels_last) {
    const Covered done = transpose_blocks<TILE, false>(base, L.sP, count, L.C, buf);
    for (int64_t t = 0; t < count; ++t)
      for (int64_t c = t < done.pixels ? done.channels : 0; c < L.C; ++c)
        base[t * L.sP + c] = store<scalar_t>(buf[c * TILE + t]);
  } else {
    for (int64_t c = 0; c < L.C; ++c)
      for (int64_t t = 0; t < count; ++t) base[c * L.sC + t] = store<scalar_t>(buf[c * TILE + t]);
  }
}

// The blocks of w channels that sweep cuts the channels into: start[j] is where j's block starts. A table, looked up
// per channel, where an integer division per channel had cost 8% of the forward's time.
struct Blocks {
  Blocks(int64_t C, int64_t w) : C(C), w(w), start(C) {
    for (int64_t j = 0; j < C; ++j) start[j] = int32_t(j / w * w);
  }
  int64_t C, w;
  std::vector<int32_t> start;
};

// Calls body(c, sums) for c = 0 .. C-1 in order, sums[t] being the sum of term(rows[j * TILE + t]) over j in
// [c - lo, c + hi] within 0 .. C-1, accumulated in sum_t; `suffix` is scratch of C * TILE sum_t.
//
// Blocked sums (van Herk / Gil-Werman): the channels are cut into blocks of w = lo + hi + 1 from channel 0, so a
// window holds at most the tail of one block and the head of the next; its sum is that block's suffix sum from the
// window's start plus the next block's prefix sum up to its end. Each is built by adding one channel to the sum of
// its neighbour, so the cost is three additions per element whatever w, and nothing is ever subtracted: a sum's
// error is that of a direct sum of the window's values, whatever has left it. (A running sum, adding the channel
// entering the window and subtracting the one leaving it, keeps the rounding residue of every value that has passed
// through: after a 1e4 left the window, a 1e-4 neighbour's output was 0.36% off; on normal inputs times 10^U{-3..4}
// (n 5, alpha 1, k 1e-5) outputs were up to 3e-5 off in float64 and 8e-5 in float32; blocked, 5e-16 and 2.5e-7.)
// (Suffix sums built one block at a time, when first needed, took less scratch but made n 5 and 21 15% slower than
// n 1.)
template <int64_t TILE, typename sum_t, typename acc_t, typename Term, typename Body>
inline void sweep(const acc_t* rows, sum_t* __restrict__ suffix, const Blocks& blocks, int64_t lo, int64_t hi,
                  Term term, Body body) {
  const int64_t C = blocks.C, w = blocks.w;
  const int32_t* start = blocks.start.data();
  sum_t running[TILE];  // held in registers: reloading the row just stored stalled on store forwarding
  for (int64_t j = C - 1; j >= 0; --j) {  // suffix[j]: rows j .. the end of j's block (or C - 1)
    const acc_t* __restrict__ row = rows + j * TILE;
    sum_t* __restrict__ out = suffix + j * TILE;
    const bool restart = j + 1 == C || start[j + 1] == j + 1;
#pragma omp simd
    for (int64_t t = 0; t < TILE; ++t) {
      running[t] = restart ? term(row[t]) : running[t] + term(row[t]);
      out[t] = running[t];
    }
  }
  sum_t prefix[TILE], both[TILE];  // prefix: rows from the start of `last`'s block to `last`
  int64_t last = -1;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t end = std::min(c + hi, C - 1);
    for (; last < end; ++last) {
      const acc_t* __restrict__ entering = rows + (last + 1) * TILE;
      const bool restart = start[last + 1] == last + 1;
#pragma omp simd
      for (int64_t t = 0; t < TILE; ++t) prefix[t] = restart ? term(entering[t]) : prefix[t] + term(entering[t]);
    }
    // The window [first, end] splits at the first block start at or after `first`: [first, boundary) is the tail
    // of the block before, [boundary, end] the head of the block that prefix covers.
    const int64_t first = std::max<int64_t>(c - lo, 0), boundary = start[first] == first ? first : start[first] + w;
    const sum_t* __restrict__ tail = suffix + first * TILE;
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

// Window sums of squares and of plain values, in sum_t. A float's square is exact in double, a bf16's in float.
template <typename sum_t>
struct Square {
  template <typename acc_t>
  sum_t operator()(acc_t v) const { return sum_t(v) * sum_t(v); }
};
template <typename sum_t>
struct Plain {
  template <typename acc_t>
  sum_t operator()(acc_t v) const { return sum_t(v); }
};

// Sums are in double for float and double storage: float's blocked sums of up to 21 terms could be ~1e-6 off. For
// bf16 and fp16 storage, float sums err far below the half ulp that rounding the output adds, at half the traffic.
template <typename scalar_t>
using sum_type = std::conditional_t<std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>, double, float>;

template <int64_t TILE, Power P, typename scalar_t, typename acc_t>
void forward_tiles(const scalar_t* x, scalar_t* y, const Layout& L, acc_t k, acc_t alpha, acc_t beta, int64_t before,
                   int64_t after) {
  using sum_t = sum_type<scalar_t>;
  const int64_t tiles = (L.HW + TILE - 1) / TILE;
  const Blocks blocks(L.C, before + after + 1);
  at::parallel_for(0, L.N * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xb(L.C * TILE), yb(L.C * TILE);
    std::vector<sum_t> suffix(L.C * TILE);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t n = index / tiles, p0 = (index % tiles) * TILE, count = std::min(TILE, L.HW - p0);
      gather<TILE>(x, L, n, p0, count, xb.data());
      sweep<TILE>(xb.data(), suffix.data(), blocks, before, after, Square<sum_t>{}, [&](int64_t c, const sum_t* sums) {
        const acc_t* __restrict__ a = xb.data() + c * TILE;
        acc_t* __restrict__ b = yb.data() + c * TILE;
        acc_t q[TILE];
        row_powers<TILE, P, false>(sums, k, alpha, beta, q, q);
#pragma omp simd
        for (int64_t t = 0; t < TILE; ++t) b[t] = a[t] * q[t];
      });
      scatter<TILE>(yb.data(), L, n, p0, count, y);
    }
  });
}

template <int64_t TILE, Power P, typename scalar_t, typename acc_t>
void backward_tiles(const scalar_t* x, const scalar_t* g, scalar_t* dx, const Layout& L, acc_t k, acc_t alpha,
                    acc_t beta, int64_t before, int64_t after) {
  using sum_t = sum_type<scalar_t>;
  const int64_t tiles = (L.HW + TILE - 1) / TILE;
  const Blocks blocks(L.C, before + after + 1);
  const acc_t two_alpha_beta = 2 * alpha * beta;
  at::parallel_for(0, L.N * tiles, 1, [&](int64_t begin, int64_t end) {
    // gb holds g, then g q, then dL/da, row by row as each is last read: three tiles where there were five.
    std::vector<acc_t> xb(L.C * TILE), gb(L.C * TILE), tb(L.C * TILE);
    std::vector<sum_t> suffix(L.C * TILE);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t n = index / tiles, p0 = (index % tiles) * TILE, count = std::min(TILE, L.HW - p0);
      gather<TILE>(x, L, n, p0, count, xb.data());
      gather<TILE>(g, L, n, p0, count, gb.data());
      sweep<TILE>(xb.data(), suffix.data(), blocks, before, after, Square<sum_t>{}, [&](int64_t c, const sum_t* sums) {
        const int64_t o = c * TILE;
        acc_t q[TILE], q_over_s[TILE];
        row_powers<TILE, P, true>(sums, k, alpha, beta, q, q_over_s);
#pragma omp simd
        for (int64_t t = 0; t < TILE; ++t) {
          tb[o + t] = gb[o + t] * xb[o + t] * q_over_s[t];  // g_j a_j q_j / s_j
          gb[o + t] = gb[o + t] * q[t];
        }
      });
      // The mirrored window: the j whose window holds c.
      sweep<TILE>(tb.data(), suffix.data(), blocks, after, before, Plain<sum_t>{}, [&](int64_t c, const sum_t* sums) {
        const int64_t o = c * TILE;
#pragma omp simd
        for (int64_t t = 0; t < TILE; ++t) gb[o + t] = gb[o + t] - two_alpha_beta * xb[o + t] * acc_t(sums[t]);
      });
      scatter<TILE>(gb.data(), L, n, p0, count, dx);
    }
  });
}

// Tiles as wide as the image allows, of 128, 64 or 32 pixels: a tile's fixed costs (its per-channel loop overhead,
// block look-ups, the prefetches of its rows) are spread over more pixels, and a contiguous tile's rows are longer
// runs of memory (32 bf16 pixels were one cache line). Kernel calls alone (2 threads, bf16 channels_last, Intel Xeon
// with AVX-512 and AMX, fastest of 20, forward + backward): 64x64x32x32 6.1 ms in tiles of 32, 4.7 in tiles of
// 128 (fp32 9.0 and 7.5); AlexNet's conv1 (128x32x32x32) 6.1 and 4.3, conv2 (128x96x16x16) 4.8 and 3.7; an 8x8
// conv5 (128x128x8x8) 1.6 in tiles of 32 and 1.3 in tiles of 64. Tiles of 256 were slower again. A tile wider than
// the image computes its zero padding, so a width is taken only where the last tile is at most a quarter padding.
constexpr int64_t TILE_WIDTHS[] = {128, 64, 32};

int64_t tile_width(int64_t HW) {
  for (const int64_t width : TILE_WIDTHS) {
    const int64_t padding = (HW + width - 1) / width * width - HW;
    if (HW >= width && 4 * padding <= HW) return width;
  }
  return TILE_WIDTHS[2];
}

// Calls body(power, tile) with the power of beta and the tile width for HW pixels as compile-time constants.
template <typename Body>
void dispatch(double beta, int64_t HW, Body body) {
  const auto with_power = [&](auto power) {
    switch (tile_width(HW)) {
      case TILE_WIDTHS[0]: body(power, std::integral_constant<int64_t, TILE_WIDTHS[0]>{}); break;
      case TILE_WIDTHS[1]: body(power, std::integral_constant<int64_t, TILE_WIDTHS[1]>{}); break;
      default: body(power, std::integral_constant<int64_t, TILE_WIDTHS[2]>{});
    }
  };
  switch (power_of(beta)) {
    case Power::ThreeQuarters: with_power(std::integral_constant<Power, Power::ThreeQuarters>{}); break;
    case Power::Half: with_power(std::integral_constant<Power, Power::Half>{}); break;
    case Power::One: with_power(std::integral_constant<Power, Power::One>{}); break;
    default: with_power(std::integral_constant<Power, Power::General>{});
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
    dispatch(beta, L.HW, [&](auto power, auto tile) {
      forward_tiles<tile, power, scalar_t, acc_t>(x.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), L, k, alpha,
                                                  beta, before, after);
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
    dispatch(beta, L.HW, [&](auto power, auto tile) {
      backward_tiles<tile, power, scalar_t, acc_t>(x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
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
