// Fused CPU kernels for the engine's decode step (llm/kernels/cpu_ext.py builds and loads them).
//
// Why: at batch 1 a 135M-parameter model spends most of a decode step outside its matmuls,
// in ~35 small aten ops per layer, each a Python call plus a dispatch plus a temporary.
// Each function here replaces several of those ops with one pass over the data:
//   - decode_attention: each query row against its sequence's paged K/V up to its own
//     position, read in place (no gather of the blocks into a padded copy), fp32 scores
//     and accumulation; a prompt's consecutive rows in tiles that share the K/V reads;
//   - rms_norm: optional residual add, then RMSNorm, with the rounding of HF's bf16 path;
//   - rope_write_kv: rotate-half RoPE of q and k from the fused qkv projection, and the
//     write of k and v into the paged cache;
//   - silu_mul: SiLU(gate) * up of the fused gate|up projection.
// Elementwise results are rounded exactly where the pure-torch path rounds (bf16 after each
// op), and the file is compiled with -ffp-contract=off so no multiply-add is fused behind
// our back: rope_write_kv and the residual add match the torch path bit for bit.
// Reductions (attention, the norm's mean square) sum in another order than torch: they
// agree to fp32 rounding, not bitwise.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

using bf16_t = uint16_t;

inline float load(float v) { return v; }
inline float load(bf16_t v) {
  uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round-to-nearest-even, as c10::BFloat16 does (NaN stays a quiet NaN).
inline bf16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<bf16_t>(u >> 16);
}

inline void store(float* p, float v) { *p = v; }
inline void store(bf16_t* p, float v) { *p = to_bf16(v); }
// The value a tensor of this type holds after storing v (identity for fp32).
inline float round_as(float, float v) { return v; }
inline float round_as(bf16_t, float v) { return load(to_bf16(v)); }

constexpr int kLanes = 16;

template <typename T>
const T* data_of(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}
template <typename T>
T* mutable_data_of(at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

// ---------------------------------------------------------------- vectors

// Sixteen fp32 lanes as a GCC vector: the compiler maps it onto the ISA it builds for
// (one zmm with AVX-512, two ymm with AVX2), so one source serves every x86-64 target.
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef uint16_t vh __attribute__((vector_size(32)));

inline vf splat(float v) { return vf{} + v; }
inline vf load16(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline vf load16(const bf16_t* p) {
  vh h;
  std::memcpy(&h, p, sizeof h);
  vu wide = __builtin_convertvector(h, vu) << 16;
  vf v;
  std::memcpy(&v, &wide, sizeof v);
  return v;
}
inline float lane_sum(vf v) {
  float sum = 0.f;
  for (int i = 0; i < 16; ++i) sum += v[i];
  return sum;
}
inline float lane_max(vf v) {
  float top = v[0];
  for (int i = 1; i < 16; ++i) top = std::max(top, v[i]);
  return top;
}

// Lane-wise a > b ? a : b, a < b ? a : b, and floor (for |x| < 2^31). GCC lowers a
// 16-lane ?: select to a scalar compare and blend per lane when it builds for AVX2, where
// no register holds 16 floats (measured: vexp became 108 scalar instructions, slower than
// torch), so there they run on the two 8-lane halves with the ISA's own instructions
// (vmaxps/vminps compute exactly these selects, NaN included).
#if defined(__AVX2__) && !defined(__AVX512F__)
template <typename Op>
inline vf by_halves(vf a, vf b, Op op) {
  __m256 x[2], y[2];
  std::memcpy(x, &a, sizeof x);
  std::memcpy(y, &b, sizeof y);
  x[0] = op(x[0], y[0]);
  x[1] = op(x[1], y[1]);
  vf out;
  std::memcpy(&out, x, sizeof out);
  return out;
}
inline vf vmax(vf a, vf b) { return by_halves(a, b, [](__m256 x, __m256 y) { return _mm256_max_ps(x, y); }); }
inline vf vmin(vf a, vf b) { return by_halves(a, b, [](__m256 x, __m256 y) { return _mm256_min_ps(x, y); }); }
inline vf vfloor(vf a) { return by_halves(a, a, [](__m256 x, __m256) { return _mm256_floor_ps(x); }); }
#else
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vf vfloor(vf a) {
  const vf n = __builtin_convertvector(__builtin_convertvector(a, vi), vf);
  return n > a ? n - 1.f : n;
}
#endif

#if defined(__AVX2__)
// The sum of 8 lanes.
inline float hsum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
// The sum of 8 int32 lanes.
inline int32_t hsum8i(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1)));
}
#endif

// vexp's Cephes polynomial with fused multiply-adds, for the 8-lane (AVX2 + FMA) and
// 16-lane (AVX-512) kernels: one body, each width supplying its floor and its 2^n scaling
// (AVX-512 has scalef; AVX2 builds the exponent bits). A few fp32 ulp from vexp.
#if defined(__FMA__)
inline __m256 splat_ps(__m256, float v) { return _mm256_set1_ps(v); }
inline __m256 min_ps(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
inline __m256 max_ps(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
inline __m256 fmadd_ps(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
inline __m256 fnmadd_ps(__m256 a, __m256 b, __m256 c) { return _mm256_fnmadd_ps(a, b, c); }
inline __m256 mul_ps(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
inline __m256 add_ps(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
inline __m256 floor_ps(__m256 a) { return _mm256_floor_ps(a); }
inline __m256 times_pow2(__m256 y, __m256 n) {
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}
#endif
#if defined(__AVX512F__)
inline __m512 splat_ps(__m512, float v) { return _mm512_set1_ps(v); }
inline __m512 min_ps(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
inline __m512 max_ps(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
inline __m512 fmadd_ps(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
inline __m512 fnmadd_ps(__m512 a, __m512 b, __m512 c) { return _mm512_fnmadd_ps(a, b, c); }
inline __m512 mul_ps(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
inline __m512 add_ps(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
inline __m512 floor_ps(__m512 a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
inline __m512 times_pow2(__m512 y, __m512 n) { return _mm512_scalef_ps(y, n); }
#endif
template <typename V>
inline V cephes_exp(V x) {
  const auto c = [](float v) { return splat_ps(V{}, v); };
  x = min_ps(max_ps(x, c(-87.3f)), c(88.7f));
  const V n = floor_ps(fmadd_ps(x, c(1.44269504088896341f), c(0.5f)));
  x = fnmadd_ps(n, c(0.693359375f), x);
  x = fnmadd_ps(n, c(-2.12194440e-4f), x);
  const V z = mul_ps(x, x);
  V y = c(1.9875691500e-4f);
  y = fmadd_ps(y, x, c(1.3981999507e-3f));
  y = fmadd_ps(y, x, c(8.3334519073e-3f));
  y = fmadd_ps(y, x, c(4.1665795894e-2f));
  y = fmadd_ps(y, x, c(1.6666665459e-1f));
  y = fmadd_ps(y, x, c(5.0000001201e-1f));
  y = fmadd_ps(y, z, add_ps(x, c(1.f)));
  return times_pow2(y, n);
}

// exp on 16 lanes: Cephes' expf (range reduction by ln 2, degree-6 polynomial), within
// 2 ulp of expf for x in [-87, 88]; smaller arguments give ~1e-38 instead of 0, which a
// softmax over at least one finite score never notices.
inline vf vexp(vf x) {
  x = vmin(splat(88.7f), vmax(splat(-87.3f), x));
  const vf fx = x * 1.44269504088896341f + 0.5f;
  const vf n = vfloor(fx);
  x = x - n * 0.693359375f;
  x = x - n * -2.12194440e-4f;
  const vf z = x * x;
  vf y = splat(1.9875691500e-4f);
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.f;
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

// Sixteen vectors of partial sums in, one vector out whose lane i is the sum of p[i]'s
// lanes: four levels of "halve each group, pair neighbours", 30 shuffles and 15 adds for
// 16 horizontal sums (instead of 16 separate reductions).
inline vf fold16(vf a, vf b) {
  return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
         __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
}
inline vf fold8(vf a, vf b) {
  return __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
         __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
}
inline vf fold4(vf a, vf b) {
  return __builtin_shufflevector(a, b, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
         __builtin_shufflevector(a, b, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
}
inline vf fold2(vf a, vf b) {
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
#if defined(__AVX2__) && !defined(__AVX512F__)
// AVX2: GCC spills the 16-lane shuffles above to memory and rebuilds them a float at a
// time (~130 scalar moves per transpose_sum), so the sums take the 8-lane route: each
// vector's two halves added, then eight vectors at a time reduced by horizontal adds.
inline __m256 transpose_sum8(const __m256* s) {
  const __m256 ab = _mm256_hadd_ps(s[0], s[1]), cd = _mm256_hadd_ps(s[2], s[3]);
  const __m256 ef = _mm256_hadd_ps(s[4], s[5]), gh = _mm256_hadd_ps(s[6], s[7]);
  const __m256 abcd = _mm256_hadd_ps(ab, cd), efgh = _mm256_hadd_ps(ef, gh);
  return _mm256_add_ps(_mm256_permute2f128_ps(abcd, efgh, 0x20),
                       _mm256_permute2f128_ps(abcd, efgh, 0x31));
}
inline vf transpose_sum(const vf* p) {
  __m256 halves[2], s[16];
  for (int i = 0; i < 16; ++i) {
    std::memcpy(halves, &p[i], sizeof halves);
    s[i] = _mm256_add_ps(halves[0], halves[1]);
  }
  const __m256 sums[2] = {transpose_sum8(s), transpose_sum8(s + 8)};
  vf out;
  std::memcpy(&out, sums, sizeof out);
  return out;
}
#else
inline vf transpose_sum(const vf* p) {
  vf l1[8], l2[4], l3[2];
  for (int i = 0; i < 8; ++i) l1[i] = fold16(p[2 * i], p[2 * i + 1]);
  for (int i = 0; i < 4; ++i) l2[i] = fold8(l1[2 * i], l1[2 * i + 1]);
  for (int i = 0; i < 2; ++i) l3[i] = fold4(l2[2 * i], l2[2 * i + 1]);
  return fold2(l3[0], l3[1]);
}
#endif

// 16 lanes rounded to bf16 (round-to-nearest-even, as to_bf16; no NaN inputs here) and
// back to fp32, so that vector code rounds where the torch path rounds.
inline vf round_bf16(vf v) {
  vu bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
  vf out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}
inline vf round_as16(float, vf v) { return v; }
inline vf round_as16(bf16_t, vf v) { return round_bf16(v); }
inline void store16(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline void store16(bf16_t* p, vf v) {
  const vf rounded = round_bf16(v);
  vu bits;
  std::memcpy(&bits, &rounded, sizeof bits);
  const vh narrow = __builtin_convertvector(bits >> 16, vh);
  std::memcpy(p, &narrow, sizeof narrow);
}

#if defined(__AVX512BF16__)
// bf16 <-> fp32 on 16 lanes, for the AVX-512 BF16 kernels below (their exp: cephes_exp).
inline __m512 bf16_lanes(const bf16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline __m512 rounded_to_bf16(__m512 v) {
  const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
// Linux grants a process AMX's tile state only on request (arch_prctl); without it the
// first tile instruction raises SIGILL. oneDNN asks too, but our kernels may run first.
bool amx_granted() {
  static const bool granted = [] {
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtileData) == 0;
  }();
  return granted;
}

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};
#endif

// ---------------------------------------------------------------- decode attention

// In place: scores [span, padded) -> softmax probabilities (fp32), the padding set to 0.
// The sink, when given, joins the denominator as a logit with no value.
inline void softmax_row(float* s, int64_t span, int64_t padded, const float* sink) {
  vf top_lanes = splat(sink ? *sink : -std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 16 <= span; i += 16) {
    const vf v = load16(s + i);
    top_lanes = vmax(v, top_lanes);
  }
  float top = lane_max(top_lanes);
  for (; i < span; ++i) top = std::max(top, s[i]);
  float total = sink ? std::exp(*sink - top) : 0.f;
  vf sums{};
  for (i = 0; i < padded; i += 16) {
    vf e = vexp(load16(s + i) - top);
    for (int64_t j = std::max<int64_t>(0, span - i); j < 16; ++j) e[j] = 0.f;  // padding
    std::memcpy(s + i, &e, sizeof e);
    sums += e;
  }
  total += lane_sum(sums);
  const vf inv = splat(1.f / total);
  for (i = 0; i < padded; i += 16) {
    const vf p = load16(s + i) * inv;
    std::memcpy(s + i, &p, sizeof p);
  }
}

// Walks positions of a paged sequence in order without a division per position (an
// integer division costs tens of cycles, as much as the rest of a position's work).
template <typename T>
struct RowCursor {
  const T* base;
  const int32_t* table;
  int64_t block_size, block_stride, row_stride, block, offset;
  RowCursor(const T* base_, const int32_t* table_, int64_t block_size_, int64_t block_stride_,
            int64_t row_stride_, int64_t position)
      : base(base_), table(table_), block_size(block_size_), block_stride(block_stride_),
        row_stride(row_stride_), block(position / block_size_), offset(position % block_size_) {}
  const T* row() const { return base + table[block] * block_stride + offset * row_stride; }
  void next() {
    if (++offset == block_size) {
      offset = 0;
      ++block;
    }
  }
};

// Scores of positions [first, len) for every query of a group, 16 positions at a time:
// ``dots(k, out)`` writes, for the K row k, each query g's 16 lanes of partial sums to
// out[g * 16]; one transpose_sum per query turns a tile of them into 16 scores (times
// ``scale``). ``partial`` holds group * 16 vectors.
template <typename T, typename Dots>
void score_tiles(RowCursor<T> keys, int64_t first, int64_t len, int64_t group, float scale,
                 vf* partial, float* scores, int64_t padded, Dots dots) {
  for (int64_t t0 = first; t0 < len; t0 += 16) {
    const int64_t n = std::min<int64_t>(16, len - t0);
    for (int64_t i = 0; i < 16; ++i) {
      if (i >= n) {
        for (int64_t g = 0; g < group; ++g) partial[g * 16 + i] = vf{};
        continue;
      }
      dots(keys.row(), partial + i);
      keys.next();
    }
    for (int64_t g = 0; g < group; ++g) {
      const vf tile = transpose_sum(partial + g * 16) * scale;
      std::memcpy(&scores[g * padded + (t0 - first)], &tile, sizeof tile);
    }
  }
}

// One (sequence, KV head) task: the G query heads sharing that KV head against positions
// [first, len). Scores for 16 positions at a time: each position's K row is converted to
// fp32 once, each query's q.k kept as 16 lanes of partial sums, and one transpose_sum
// turns 16 of them into 16 scores. Then an exact softmax (max, vectorised exp, sum; the
// sink joins the denominator) and the weighted sum of V rows, all in fp32. CH = head_dim
// / 16 is a template parameter so a row's chunks live in registers.
template <typename T, int CH>
void attend_one(const float* q, int64_t group, const T* k_base, const T* v_base,
                const int32_t* table, int64_t block_size, int64_t kb, int64_t ko, int64_t vb,
                int64_t vo, int64_t first, int64_t len, const float* sinks, float scale,
                std::vector<float>& scores, std::vector<vf>& work, float* out) {
  const int64_t span = len - first;
  const int64_t padded = (span + 15) / 16 * 16;
  scores.assign(group * padded, 0.f);
  // work: the scaled queries (group * CH), then 16 partial sums per query (group * 16)
  work.assign(group * CH + group * 16 + group * CH, vf{});
  vf* qv = work.data();
  vf* partial = qv + group * CH;
  vf* acc = partial + group * 16;
  for (int64_t i = 0; i < group * CH; ++i) qv[i] = load16(q + i * 16) * scale;
  score_tiles(RowCursor<T>(k_base, table, block_size, kb, ko, first), first, len, group, 1.f,
              partial, scores.data(), padded, [&](const T* k, vf* out) {
                vf row[CH];
                for (int c = 0; c < CH; ++c) row[c] = load16(k + c * 16);
                for (int64_t g = 0; g < group; ++g) {
                  const vf* qg = qv + g * CH;
                  vf sum = qg[0] * row[0];
                  for (int c = 1; c < CH; ++c) sum += qg[c] * row[c];
                  out[g * 16] = sum;
                }
              });
  for (int64_t g = 0; g < group; ++g)
    softmax_row(&scores[g * padded], span, padded, sinks ? &sinks[g] : nullptr);
  RowCursor<T> values(v_base, table, block_size, vb, vo, first);
  for (int64_t t = first; t < len; ++t) {
    const T* v = values.row();
    values.next();
    vf row[CH];
    for (int c = 0; c < CH; ++c) row[c] = load16(v + c * 16);
    for (int64_t g = 0; g < group; ++g) {
      const vf p = splat(scores[g * padded + t - first]);
      for (int c = 0; c < CH; ++c) acc[g * CH + c] += p * row[c];
    }
  }
  std::memcpy(out, acc, group * CH * sizeof(vf));
}

#if defined(__AVX512BF16__)
inline __m512 as_m512(vf v) { return reinterpret_cast<__m512&>(v); }
inline vf as_vf(__m512 v) { return reinterpret_cast<vf&>(v); }

// 2^t on 16 lanes: 2^round(t) (scalef) times 2^f, f = t - round(t) in [-1/2, 1/2], by
// its Taylor polynomial of degree 6 (relative error below 1.2e-7, about an fp32 ulp).
// The softmax below computes exp(x) as 2^(x log2 e) with the shift and scale folded into
// one multiply-add: ten operations per 16 scores where cephes_exp, with them, took
// sixteen (a 405-token prefill's attention spent ~20% of its time in the softmax).
inline __m512 exp2_lanes(__m512 t) {
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  constexpr float kTaylor[] = {1.5403530e-4f, 1.3333558e-3f, 9.6181291e-3f, 5.5504109e-2f,
                               2.4022651e-1f, 6.9314718e-1f,  1.f};  // ln(2)^k / k!, k = 6..0
  __m512 p = _mm512_set1_ps(kTaylor[0]);
  for (int k = 1; k < 7; ++k) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kTaylor[k]));
  return _mm512_scalef_ps(p, n);
}

// softmax_row's exact softmax (max, exp, sum; the sink joins the denominator) for one
// query's scores [0, len), written for AVX-512: the tail masked instead of zeroed lane by
// lane, exp as exp2_lanes (fp32-accurate), and the probabilities stored as bf16
// (round-to-nearest-even), as vdpbf16ps takes them. The scores are overwritten; probs
// gets (len + 15) / 16 * 16 entries, those past len 0.
inline void softmax_to_bf16(float* scores, int64_t len, const float* sink, bf16_t* probs,
                            float scale = 1.f) {
  const int64_t whole = len / 16, chunks = (len + 15) / 16;
  const __mmask16 last = len % 16 ? static_cast<__mmask16>((1u << (len % 16)) - 1) : 0xffff;
  const auto mask = [&](int64_t c) { return c < whole ? static_cast<__mmask16>(0xffff) : last; };
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 top_lanes = neg_inf;
  for (int64_t c = 0; c < chunks; ++c)
    top_lanes = _mm512_max_ps(top_lanes, _mm512_mask_loadu_ps(neg_inf, mask(c), scores + c * 16));
  // scaling by a positive number keeps the order, so max(s) * scale is the scaled maximum
  const float top = std::max(_mm512_reduce_max_ps(top_lanes) * scale,
                             sink ? *sink : -std::numeric_limits<float>::infinity());
  // exp(s scale - top) = 2^(s scale log2 e - top log2 e)
  constexpr float kLog2e = 1.44269504088896341f;
  const __m512 slope = _mm512_set1_ps(scale * kLog2e), shift = _mm512_set1_ps(-top * kLog2e);
  __m512 sums = _mm512_setzero_ps();
  for (int64_t c = 0; c < chunks; ++c) {
    const __m512 t = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask(c), scores + c * 16), slope, shift);
    const __m512 e = _mm512_maskz_mov_ps(mask(c), exp2_lanes(t));
    _mm512_storeu_ps(scores + c * 16, e);
    sums = _mm512_add_ps(sums, e);
  }
  const float total = _mm512_reduce_add_ps(sums) + (sink ? std::exp(*sink - top) : 0.f);
  const __m512 inv = _mm512_set1_ps(1.f / total);
  for (int64_t c = 0; c < chunks; ++c) {
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(scores + c * 16), inv));
    std::memcpy(probs + c * 16, &h, sizeof h);
  }
}

// p . V accumulates over V rows interleaved into (v_t[d], v_t+1[d]) pairs. Interleaving
// works within 128-bit lanes, so accumulator lane j of a 32-dimension chunk holds
// dimension 8 (j / 4) + j % 4 (the "low" accumulator) or that plus 4 (the "high" one):
// the two 16-lane halves of the chunk in dimension order.
inline void in_dimension_order(__m512 lo, __m512 hi, __m512& first, __m512& second) {
  const __m512i low_index = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  first = _mm512_permutex2var_ps(lo, low_index, hi);
  second = _mm512_permutex2var_ps(lo, _mm512_add_epi32(low_index, _mm512_set1_epi32(8)), hi);
}

// p . V for N consecutive queries of a group (probs: the first one's row, rows padded
// apart; out: its fp32 output row, rows CH * 16 apart), positions [first, len) two at a
// time. N * 2 * C2 accumulators stay in registers for the whole pass (they lived in
// memory when the query count was a runtime value: a load and a store per multiply-add,
// twice the step's attention time with the cache in L2).
template <int C2, int N>
void weigh_values_dpbf16(RowCursor<bf16_t> values, int64_t first, int64_t len,
                         const bf16_t* probs, int64_t padded, float* out) {
  constexpr int CH = 2 * C2;
  __m512 acc[N][2 * C2];
  for (int j = 0; j < N; ++j)
    for (int c = 0; c < 2 * C2; ++c) acc[j][c] = _mm512_setzero_ps();
  const __m512i zero_row = _mm512_setzero_si512();
  for (int64_t t = first; t < len; t += 2) {
    const bool pair = t + 1 < len;
    const bf16_t* v0 = values.row();
    values.next();
    const bf16_t* v1 = pair ? values.row() : nullptr;
    if (pair) values.next();
    __m512bh lo[C2], hi[C2];
    for (int c = 0; c < C2; ++c) {
      const __m512i a = _mm512_loadu_si512(v0 + c * 32);
      const __m512i b = pair ? _mm512_loadu_si512(v1 + c * 32) : zero_row;
      lo[c] = (__m512bh)_mm512_unpacklo_epi16(a, b);
      hi[c] = (__m512bh)_mm512_unpackhi_epi16(a, b);
    }
    for (int j = 0; j < N; ++j) {
      int32_t packed;
      std::memcpy(&packed, &probs[j * padded + t - first], sizeof packed);
      const __m512bh pp = (__m512bh)_mm512_set1_epi32(packed);
      for (int c = 0; c < C2; ++c) {
        acc[j][2 * c] = _mm512_dpbf16_ps(acc[j][2 * c], lo[c], pp);
        acc[j][2 * c + 1] = _mm512_dpbf16_ps(acc[j][2 * c + 1], hi[c], pp);
      }
    }
  }
  for (int j = 0; j < N; ++j)
    for (int c = 0; c < C2; ++c) {
      __m512 first_half, second_half;
      in_dimension_order(acc[j][2 * c], acc[j][2 * c + 1], first_half, second_half);
      _mm512_storeu_ps(out + j * CH * 16 + c * 32, first_half);
      _mm512_storeu_ps(out + j * CH * 16 + c * 32 + 16, second_half);
    }
}

// Queries per p . V pass: as many as keep the accumulators and a pair's V chunks in the
// 32 zmm registers.
template <int C2>
constexpr int kValueQueries = C2 == 1 ? 8 : (C2 == 2 ? 6 : (C2 <= 4 ? 3 : 1));

template <int C2, int N = kValueQueries<C2>>
void weigh_values_dpbf16(int64_t n, RowCursor<bf16_t> values, int64_t first, int64_t len,
                         const bf16_t* probs, int64_t padded, float* out) {
  if constexpr (N > 1) {
    if (n < N) return weigh_values_dpbf16<C2, N - 1>(n, values, first, len, probs, padded, out);
  }
  weigh_values_dpbf16<C2, N>(values, first, len, probs, padded, out);
}

// The same task for a bf16 cache on a CPU with AVX-512 BF16 (Zen 4, Sapphire Rapids and
// later): vdpbf16ps multiplies bf16 pairs and accumulates in fp32 in one instruction, so
// K and V rows are used as stored, with no conversion. q . k: a K row's 32-element chunks
// against the query's (exact: q is bf16 already). p . V: two positions at a time, their
// V rows interleaved into (v_t[d], v_t+1[d]) pairs against the broadcast pair (p_t,
// p_t+1) rounded to bf16, as the torch path rounds probabilities before its bf16 bmm
// (weigh_values_dpbf16, up to kValueQueries queries per pass over V).
template <int CH>
void attend_one_dpbf16(const float* q, int64_t group, const bf16_t* k_base, const bf16_t* v_base,
                       const int32_t* table, int64_t block_size, int64_t kb, int64_t ko,
                       int64_t vb, int64_t vo, int64_t first, int64_t len, const float* sinks,
                       float scale, std::vector<float>& scores, std::vector<vf>& work,
                       float* out) {
  constexpr int C2 = CH / 2;  // 32-element chunks of head_dim
  const int64_t span = len - first;
  const int64_t padded = (span + 15) / 16 * 16;
  scores.resize(group * padded);  // score_tiles writes all of it, padding included
  // work: the queries as bf16 pairs (group * C2), 16 partial sums per query (group * 16)
  work.resize(group * C2 + group * 16);
  __m512bh* qb = reinterpret_cast<__m512bh*>(work.data());
  vf* partial = work.data() + group * C2;
  for (int64_t i = 0; i < group * C2; ++i)
    qb[i] = _mm512_cvtne2ps_pbh(as_m512(load16(q + i * 32 + 16)), as_m512(load16(q + i * 32)));
  // Software prefetch: each K row kKeysAhead positions ahead, and each position's V row
  // while its score is computed (the p . V pass then finds V in L1/L2). On a 2-core Xeon
  // with AMX a position and KV head took 38 ns with the cache in memory against 16 ns with
  // it in cache: per-core bandwidth there is bound by how many lines are in flight, and
  // the hardware prefetcher ramps up anew on each sequence's short runs. With these: 30 ns,
  // and 16 sequences x 450 positions x 30 layers 13.2 -> 9.5-9.9 ms on 2 threads.
  RowCursor<bf16_t> value_ahead(v_base, table, block_size, vb, vo, first);
  constexpr int64_t kKeysAhead = 16;
  RowCursor<bf16_t> key_ahead(k_base, table, block_size, kb, ko, first + kKeysAhead);
  int64_t ahead = first + kKeysAhead;
  score_tiles(RowCursor<bf16_t>(k_base, table, block_size, kb, ko, first), first, len, group,
              scale, partial, scores.data(), padded, [&](const bf16_t* k, vf* out) {
                for (int c = 0; c < C2; ++c)
                  _mm_prefetch(reinterpret_cast<const char*>(value_ahead.row() + c * 32), _MM_HINT_T0);
                value_ahead.next();
                if (ahead < len) {
                  for (int c = 0; c < C2; ++c)
                    _mm_prefetch(reinterpret_cast<const char*>(key_ahead.row() + c * 32), _MM_HINT_T0);
                  key_ahead.next();
                  ++ahead;
                }
                __m512bh row[C2];
                for (int c = 0; c < C2; ++c) row[c] = (__m512bh)_mm512_loadu_si512(k + c * 32);
                for (int64_t g = 0; g < group; ++g) {
                  __m512 sum = _mm512_setzero_ps();
                  for (int c = 0; c < C2; ++c) sum = _mm512_dpbf16_ps(sum, qb[g * C2 + c], row[c]);
                  out[g * 16] = as_vf(sum);
                }
              });
  // probabilities as bf16, two positions per 32 bits: (p_t, p_t+1) is one load below;
  // softmax_to_bf16 zeroes the padding past the last position
  thread_local std::vector<bf16_t> probs;
  probs.resize(group * padded);
  for (int64_t g = 0; g < group; ++g)
    softmax_to_bf16(&scores[g * padded], span, sinks ? &sinks[g] : nullptr, &probs[g * padded]);
  const RowCursor<bf16_t> values(v_base, table, block_size, vb, vo, first);
  for (int64_t g = 0; g < group; g += kValueQueries<C2>)
    weigh_values_dpbf16<C2>(std::min<int64_t>(kValueQueries<C2>, group - g), values, first, len,
                            &probs[g * padded], padded, out + g * CH * 16);
}

// ---- prefill tiles: consecutive rows of one prompt share their K/V reads
//
// A prompt's rows attend to the same keys (each up to its own position), so a tile of up
// to kTileRows consecutive rows and the G query heads of one KV head share one pass over
// K and V: the prompt's K rows are transposed once (for all its tiles) into 16-key columns
// (lane = key, one vector per bf16 pair of dimensions), so each query's 16 scores are
// vdpbf16ps with its broadcast pairs, with no horizontal sums; its V rows are interleaved
// into pairs once, as attend_one_dpbf16 does per query group. The softmax (softmax_to_bf16), the bf16 rounding
// of the probabilities and the order of the p . V sums are attend_one_dpbf16's; scores sum the
// same products in another order (fp32 rounding apart). Rows past a query's own length
// have probability 0, so one pass over the tile's keys serves every row.
constexpr int64_t kTileRows = 16;
constexpr int kScoreQueries = 12;  // queries whose scores are computed together (12 chains
                                   // of vdpbf16ps hide its latency)

// Transposes 16 rows of 16 32-bit lanes in place (row i lane j -> row j lane i).
inline void transpose16x16(__m512i* r) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
  }
}

// Per-thread scratch of attend_tile_dpbf16, kept across tasks.
struct TileScratch {
  std::vector<uint32_t> queries;   // per query: head_dim / 2 bf16 pairs
  std::vector<float> scores;       // per query: padded keys
  std::vector<bf16_t> probs;       // per query: padded keys, bf16
};

// A sequence's K and V in the layouts the tile kernels multiply, for the 16-key chunks
// [c0, c1): K transposed per chunk (chunk c's head_dim / 2 vectors at keys_t[c * D2], lane
// = key) and V rows interleaved into pairs (pair p's 2 * C2 vectors at values[p * 2 * C2]),
// zero past the first `keys` positions.
template <int C2>
void transpose_keys_values(const bf16_t* k_base, const bf16_t* v_base, const int32_t* table,
                           int64_t block_size, int64_t kb, int64_t ko, int64_t vb, int64_t vo,
                           int64_t keys, int64_t c0, int64_t c1, __m512i* keys_t,
                           __m512i* values) {
  constexpr int D2 = C2 * 16;  // bf16 pairs per row
  RowCursor<bf16_t> key_rows(k_base, table, block_size, kb, ko, c0 * 16);
  for (int64_t c = c0; c < c1; ++c) {
    __m512i block[C2][16];
    for (int i = 0; i < 16; ++i) {
      const bool real = c * 16 + i < keys;
      for (int j = 0; j < C2; ++j)
        block[j][i] = real ? _mm512_loadu_si512(key_rows.row() + j * 32) : _mm512_setzero_si512();
      if (real) key_rows.next();
    }
    for (int j = 0; j < C2; ++j) {
      transpose16x16(block[j]);
      std::memcpy(&keys_t[c * D2 + j * 16], block[j], sizeof block[j]);
    }
  }
  RowCursor<bf16_t> value_rows(v_base, table, block_size, vb, vo, c0 * 16);
  for (int64_t p = c0 * 8; p < c1 * 8; ++p) {
    const bool first = 2 * p < keys, second = 2 * p + 1 < keys;
    const bf16_t* v0 = first ? value_rows.row() : nullptr;
    if (first) value_rows.next();
    const bf16_t* v1 = second ? value_rows.row() : nullptr;
    if (second) value_rows.next();
    for (int c = 0; c < C2; ++c) {
      const __m512i a = first ? _mm512_loadu_si512(v0 + c * 32) : _mm512_setzero_si512();
      const __m512i b = second ? _mm512_loadu_si512(v1 + c * 32) : _mm512_setzero_si512();
      values[(p * C2 + c) * 2] = _mm512_unpacklo_epi16(a, b);
      values[(p * C2 + c) * 2 + 1] = _mm512_unpackhi_epi16(a, b);
    }
  }
}

// A tile's queries as bf16 pairs, into s.queries (padded_queries, the padding repeating the
// last query). Its K and V operands are its prompt's, laid out once for all the prompt's
// tiles (transpose_keys_values, called by decode_attention_impl); past a tile's own keys
// they hold the prompt's later keys, which its rows' zero probabilities leave out.
template <int C2>
void prepare_queries(const bf16_t* q, int64_t row_stride, int64_t group, int64_t queries,
                     int64_t padded_queries, TileScratch& s) {
  constexpr int D2 = C2 * 16;  // bf16 pairs per row
  s.queries.resize(padded_queries * D2);
  for (int64_t qi = 0; qi < padded_queries; ++qi) {
    const int64_t real = std::min(qi, queries - 1);
    std::memcpy(&s.queries[qi * D2], q + (real / group) * row_stride + (real % group) * D2 * 2,
                D2 * sizeof(uint32_t));
  }
}

// One (tile, KV head) task: `rows` consecutive positions of one sequence, row r with
// length len0 + r, and the `group` query heads of KV head h (q and out point at row 0's
// first such head; consecutive rows are row_stride apart), against that head's K and V as
// transpose_keys_values laid them out for the prompt. C2 = head_dim / 32.
template <int C2>
void attend_tile_dpbf16(const bf16_t* q, bf16_t* out, int64_t row_stride, int64_t rows,
                        int64_t group, int64_t len0, const float* sinks, float scale,
                        const __m512i* keys_t, const __m512i* values, TileScratch& s) {
  constexpr int D2 = C2 * 16;  // bf16 pairs per row
  constexpr int QV = C2 == 1 ? 6 : (C2 == 2 ? 6 : (C2 <= 4 ? 3 : 1));  // queries per p . V pass
  static_assert(kScoreQueries % QV == 0, "query padding serves both passes");
  const int64_t keys = len0 + rows - 1;  // the last row's length
  const int64_t padded = (keys + 15) / 16 * 16;
  const int64_t queries = rows * group;
  const int64_t padded_queries = (queries + kScoreQueries - 1) / kScoreQueries * kScoreQueries;
  const auto row_of = [&](int64_t qi) { return std::min(qi, queries - 1) / group; };
  prepare_queries<C2>(q, row_stride, group, queries, padded_queries, s);

  // scores, kScoreQueries queries at a time against each chunk their rows reach
  s.scores.resize(padded_queries * padded);
  s.probs.resize(padded_queries * padded);  // each query's row is written or zeroed below
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t q0 = 0; q0 < padded_queries; q0 += kScoreQueries) {
    const int64_t reach = (len0 + row_of(q0 + kScoreQueries - 1) + 15) / 16;
    const uint32_t* qp = &s.queries[q0 * D2];
    for (int64_t c = 0; c < reach; ++c) {
      __m512 acc[kScoreQueries];
      for (int j = 0; j < kScoreQueries; ++j) acc[j] = _mm512_setzero_ps();
      const __m512i* kt = keys_t + c * D2;
      for (int d = 0; d < D2; ++d) {
        const __m512bh k = (__m512bh)_mm512_loadu_si512(kt + d);
        for (int j = 0; j < kScoreQueries; ++j)
          acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)_mm512_set1_epi32(qp[j * D2 + d]), k);
      }
      for (int j = 0; j < kScoreQueries; ++j)
        _mm512_storeu_ps(&s.scores[(q0 + j) * padded + c * 16], _mm512_mul_ps(acc[j], vscale));
    }
    for (int j = 0; j < kScoreQueries; ++j) {
      const int64_t qi = q0 + j, len = len0 + row_of(qi);
      softmax_to_bf16(&s.scores[qi * padded], len,
                   sinks ? &sinks[std::min(qi, queries - 1) % group] : nullptr,
                   &s.probs[qi * padded]);
      // zero past its own keys up to the tile's last: p . V reads as far as its pass's
      // longest row
      bf16_t* row = s.probs.data() + qi * padded;
      std::fill(row + (len + 15) / 16 * 16, row + padded, 0);
    }
  }

  // p . V, QV queries at a time over the key pairs their rows reach
  for (int64_t q0 = 0; q0 < queries; q0 += QV) {
    const int64_t reach = (len0 + row_of(q0 + QV - 1) + 1) / 2;
    __m512 acc[QV][2 * C2];
    for (int j = 0; j < QV; ++j)
      for (int c = 0; c < 2 * C2; ++c) acc[j][c] = _mm512_setzero_ps();
    for (int64_t p = 0; p < reach; ++p) {
      const __m512i* v = values + p * 2 * C2;
      for (int j = 0; j < QV; ++j) {
        int32_t packed;
        std::memcpy(&packed, &s.probs[(q0 + j) * padded + 2 * p], sizeof packed);
        const __m512bh pp = (__m512bh)_mm512_set1_epi32(packed);
        for (int c = 0; c < 2 * C2; ++c)
          acc[j][c] = _mm512_dpbf16_ps(acc[j][c], (__m512bh)_mm512_loadu_si512(v + c), pp);
      }
    }
    for (int j = 0; j < QV && q0 + j < queries; ++j) {
      const int64_t qi = q0 + j;
      bf16_t* o = out + (qi / group) * row_stride + (qi % group) * D2 * 2;
      for (int c = 0; c < C2; ++c) {
        __m512 first_half, second_half;
        in_dimension_order(acc[j][2 * c], acc[j][2 * c + 1], first_half, second_half);
        const __m256bh a = _mm512_cvtneps_pbh(first_half);
        const __m256bh b = _mm512_cvtneps_pbh(second_half);
        std::memcpy(o + c * 32, &a, sizeof a);
        std::memcpy(o + c * 32 + 16, &b, sizeof b);
      }
    }
  }
}

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
// attend_tile_dpbf16's work on AMX: the same operands (transpose_keys_values), with both products as
// tile multiplies. Scores: 16 queries (a tile of their bf16 pairs, 32 dimensions a row) times
// a 16-key chunk of transposed K (exactly TDPBF16PS's second operand: row p holds pair p of
// each key), C2 multiplies per 16 x 16 scores. p . V: 16 queries' probabilities over 32 keys
// (one tile) times the interleaved V rows of those keys (row p holds key pair p of 16
// dimensions), into 2 C2 output tiles of 16 x 16 fp32, at most four per pass over the keys.
// On a 2-core Sapphire Rapids the vdpbf16ps tiles took ~29% of a 400-token prefill.
// The softmax and the bf16 probabilities are the other kernel's (softmax_to_bf16); AMX sums
// each product in its own order, so the result agrees to fp32 rounding, not bitwise.
constexpr int64_t kAmxQueries = 16;  // queries per tile of scores or outputs
constexpr int kAmxOutTiles = 4;      // output tiles per pass over the keys (tiles 0-3)

// Tiles 0-3: scores (0) or outputs; 4: queries or probabilities; 5-7: keys or values.
void configure_square_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = 16;
    config.bytes_per_row[t] = 64;
  }
  _tile_loadconfig(&config);
}

// Tiles 0..N-1 += A (tile 4, loaded here from a, a_stride bytes a row) times N second
// operands, tile i's loaded from b + i * b_step (b_stride bytes a row) into tile 5, 6 or 7 in
// turn. N independent accumulators keep AMX busy: one alone waits on each multiply.
template <int N>
inline void multiply_into_tiles(const void* a, int64_t a_stride, const __m512i* b,
                                int64_t b_stride, int64_t b_step) {
  _tile_loadd(4, a, a_stride);
  _tile_loadd(5, b, b_stride);
  _tile_dpbf16ps(0, 4, 5);
  if constexpr (N > 1) {
    _tile_loadd(6, b + b_step, b_stride);
    _tile_dpbf16ps(1, 4, 6);
  }
  if constexpr (N > 2) {
    _tile_loadd(7, b + 2 * b_step, b_stride);
    _tile_dpbf16ps(2, 4, 7);
  }
  if constexpr (N > 3) {
    _tile_loadd(5, b + 3 * b_step, b_stride);
    _tile_dpbf16ps(3, 4, 5);
  }
}

// Tile i (0..N-1) to base + i * step floats, stride bytes a row.
template <int N>
inline void store_tiles(float* base, int64_t stride, int64_t step) {
  _tile_stored(0, base, stride);
  if constexpr (N > 1) _tile_stored(1, base + step, stride);
  if constexpr (N > 2) _tile_stored(2, base + 2 * step, stride);
  if constexpr (N > 3) _tile_stored(3, base + 3 * step, stride);
}

template <int N>
inline void zero_tiles() {
  _tile_zero(0);
  if constexpr (N > 1) _tile_zero(1);
  if constexpr (N > 2) _tile_zero(2);
  if constexpr (N > 3) _tile_zero(3);
}

// f(std::integral_constant<int, n>) for a runtime n in 1..4: tile numbers are immediates,
// so the tile count must be a compile-time one.
template <typename F>
inline void with_tile_count(int64_t n, F&& f) {
  switch (n) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: f(std::integral_constant<int, 4>{}); break;
  }
}

template <int C2>
void attend_tile_amx(const bf16_t* q, bf16_t* out, int64_t row_stride, int64_t rows,
                     int64_t group, int64_t len0, const float* sinks, float scale,
                     const __m512i* keys_t, const __m512i* values, TileScratch& s) {
  constexpr int D2 = C2 * 16;           // bf16 pairs per row
  constexpr int kOutTiles = 2 * C2;     // 16-dimension output tiles per query
  const int64_t keys = len0 + rows - 1;  // the last row's length
  const int64_t padded = (keys + 31) / 32 * 32;  // whole 32-key tiles of probabilities
  const int64_t queries = rows * group;
  const int64_t padded_queries = (queries + kAmxQueries - 1) / kAmxQueries * kAmxQueries;
  const auto row_of = [&](int64_t qi) { return std::min(qi, queries - 1) / group; };
  prepare_queries<C2>(q, row_stride, group, queries, padded_queries, s);
  s.scores.resize(kAmxQueries * padded);
  s.probs.resize(kAmxQueries * padded);
  configure_square_tiles();
  alignas(64) float outputs[kAmxOutTiles][kAmxQueries * 16];
  for (int64_t q0 = 0; q0 < padded_queries; q0 += kAmxQueries) {
    const int64_t reach = len0 + row_of(q0 + kAmxQueries - 1);  // the longest row's length
    const int64_t chunks = (reach + 15) / 16;
    for (int64_t c0 = 0; c0 < chunks; c0 += kAmxOutTiles) {
      with_tile_count(std::min<int64_t>(kAmxOutTiles, chunks - c0), [&](auto count) {
        constexpr int N = decltype(count)::value;
        zero_tiles<N>();
        for (int j = 0; j < C2; ++j)
          multiply_into_tiles<N>(&s.queries[q0 * D2 + j * 16], D2 * sizeof(uint32_t),
                                 keys_t + c0 * D2 + j * 16, 64, D2);
        store_tiles<N>(&s.scores[c0 * 16], padded * sizeof(float), 16);
      });
    }
    for (int64_t j = 0; j < kAmxQueries; ++j) {
      const int64_t qi = q0 + j, len = len0 + row_of(qi);
      bf16_t* row = s.probs.data() + j * padded;
      softmax_to_bf16(&s.scores[j * padded], len,
                      sinks ? &sinks[std::min(qi, queries - 1) % group] : nullptr, row, scale);
      std::fill(row + (len + 15) / 16 * 16, row + padded, 0);
    }
    for (int first = 0; first < kOutTiles; first += kAmxOutTiles) {
      const int n = std::min(kAmxOutTiles, kOutTiles - first);  // even: whole 32-dim chunks
      const __m512i* pair_values = values + first;  // output tile t reads vector t of a pair
      const int64_t probs_stride = padded * sizeof(bf16_t), values_stride = 2 * C2 * 64;
      const int64_t blocks = (reach + 31) / 32;
      with_tile_count(n, [&](auto count) {
        constexpr int N = decltype(count)::value;
        zero_tiles<N>();
        for (int64_t b = 0; b < blocks; ++b)
          multiply_into_tiles<N>(s.probs.data() + b * 32, probs_stride,
                                 pair_values + b * 16 * 2 * C2, values_stride, 1);
        store_tiles<N>(outputs[0], 64, kAmxQueries * 16);
      });
      for (int64_t j = 0; j < kAmxQueries && q0 + j < queries; ++j) {
        const int64_t qi = q0 + j;
        bf16_t* o = out + (qi / group) * row_stride + (qi % group) * D2 * 2 + first * 16;
        for (int i = 0; i < n; i += 2) {
          __m512 first_half, second_half;
          in_dimension_order(_mm512_load_ps(&outputs[i][j * 16]),
                             _mm512_load_ps(&outputs[i + 1][j * 16]), first_half, second_half);
          const __m256bh a = _mm512_cvtneps_pbh(first_half);
          const __m256bh b = _mm512_cvtneps_pbh(second_half);
          std::memcpy(o + i * 16, &a, sizeof a);
          std::memcpy(o + i * 16 + 16, &b, sizeof b);
        }
      }
    }
  }
  _tile_release();
}
#endif

using TileFn = void (*)(const bf16_t*, bf16_t*, int64_t, int64_t, int64_t, int64_t, const float*,
                        float, const __m512i*, const __m512i*, TileScratch&);

// Whether prefill tiles run on AMX where this process may use it; the tests turn it off to
// check the vdpbf16ps tiles on the same CPU (use_amx_attention_tiles).
std::atomic<bool> amx_tiles_wanted{true};

template <int C2>
TileFn tile_kernel(bool amx) {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
  if (amx) return attend_tile_amx<C2>;
#endif
  return attend_tile_dpbf16<C2>;
}

// pick(std::integral_constant<int, C2>{}) for the head sizes the prefill tiles take
// (C2 = head_dim / 32), or `none` for any other.
template <typename R, typename F>
R by_head_chunks(int64_t head_dim, F&& pick, R none) {
  switch (head_dim) {
    case 32: return pick(std::integral_constant<int, 1>{});
    case 64: return pick(std::integral_constant<int, 2>{});
    case 96: return pick(std::integral_constant<int, 3>{});
    case 128: return pick(std::integral_constant<int, 4>{});
    case 256: return pick(std::integral_constant<int, 8>{});
    default: return none;
  }
}

TileFn tile_for(int64_t head_dim) {
  bool amx = false;
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
  amx = amx_tiles_wanted.load() && amx_granted();
#endif
  return by_head_chunks<TileFn>(
      head_dim, [&](auto c2) { return tile_kernel<decltype(c2)::value>(amx); }, nullptr);
}

using TransposeFn = void (*)(const bf16_t*, const bf16_t*, const int32_t*, int64_t, int64_t,
                             int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, __m512i*,
                             __m512i*);

TransposeFn transpose_for(int64_t head_dim) {
  return by_head_chunks<TransposeFn>(
      head_dim, [](auto c2) -> TransposeFn { return transpose_keys_values<decltype(c2)::value>; },
      nullptr);
}

// A prompt's tiles (consecutive tile units of one sequence in a step) and where its K and
// V operands lie, laid out once for all of them (SharedOperands).
struct TilePrompt {
  int64_t seq;      // its first row
  int64_t keys;     // the longest row's length: keys [0, keys) are read
  int64_t offset;   // of its first KV head's operands in SharedOperands::storage
  // keys rounded up to whole 32-key blocks (the AMX tiles' unit)
  int64_t padded() const { return (keys + 31) / 32 * 32; }
};

// The K and V operands of every prompt of a step, per (prompt, KV head): K transposed
// (padded / 16 chunks of head_dim / 2 vectors), then V interleaved (padded / 2 pairs of
// head_dim / 16 vectors). Each tile then reads them instead of transposing its keys and
// interleaving its values itself: a 405-token prompt's 26 tiles per KV head did that for
// 13x as many keys as it has, ~9% of its attention time.
struct SharedOperands {
  std::vector<TilePrompt> prompts;
  std::vector<__m512i> storage;
  int64_t head_dim = 0;

  int64_t keys_size(const TilePrompt& p) const { return p.padded() / 16 * head_dim / 2; }
  int64_t head_size(const TilePrompt& p) const { return keys_size(p) + p.padded() * head_dim / 32; }
  __m512i* keys(int64_t prompt, int64_t h) {
    const TilePrompt& p = prompts[prompt];
    return storage.data() + p.offset + h * head_size(p);
  }
  __m512i* values(int64_t prompt, int64_t h) { return keys(prompt, h) + keys_size(prompts[prompt]); }
};
#endif

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// fp32 attention for AVX2 builds, 8 lanes with fused multiply-adds. The 16-lane attend_one
// compiles for AVX2 into code that keeps its vectors on the stack (157 ns per position and
// KV head on a Zen 3, where this takes ~15). For a (row, KV head): scores of 8 positions at
// a time (each position's K row read once for the G queries, its 8-lane partial sums
// reduced by transpose_sum8), an exact softmax (max, exp, sum; the sink joins the
// denominator) and p . V with each query's accumulators in registers, over chunks of
// positions small enough for their V rows to stay in L1 between the G queries. The
// division by the sum comes last, on the output row.
constexpr int64_t kAvx2MaxGroup = 16;
constexpr int64_t kValueChunk = 64;

// In place: scores [span) -> exp(score - max); returns the softmax denominator (sink too).
inline float exp_scores8(float* s, int64_t span, const float* sink) {
  const int64_t whole = span / 8 * 8;
  __m256 top8 = _mm256_set1_ps(sink ? *sink : -std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < whole; i += 8) top8 = _mm256_max_ps(top8, _mm256_loadu_ps(s + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, top8);
  float top = lanes[0];
  for (int i = 1; i < 8; ++i) top = std::max(top, lanes[i]);
  for (int64_t i = whole; i < span; ++i) top = std::max(top, s[i]);
  const __m256 top_v = _mm256_set1_ps(top);
  __m256 sum8 = _mm256_setzero_ps();
  for (int64_t i = 0; i < whole; i += 8) {
    const __m256 e = cephes_exp(_mm256_sub_ps(_mm256_loadu_ps(s + i), top_v));
    _mm256_storeu_ps(s + i, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  float total = hsum8(sum8) + (sink ? std::exp(*sink - top) : 0.f);
  for (int64_t i = whole; i < span; ++i) {
    s[i] = std::exp(s[i] - top);
    total += s[i];
  }
  return total;
}

template <int C8>
void attend_one_avx2(const float* q, int64_t group, const float* k_base, const float* v_base,
                     const int32_t* table, int64_t block_size, int64_t kb, int64_t ko, int64_t vb,
                     int64_t vo, int64_t first, int64_t len, const float* sinks, float scale,
                     std::vector<float>& scores, std::vector<vf>&, float* out) {
  const int64_t span = len - first;
  const int64_t padded = (span + 7) / 8 * 8;
  scores.resize(group * padded);
  __m256 qv[kAvx2MaxGroup][C8];
  for (int64_t g = 0; g < group; ++g)
    for (int c = 0; c < C8; ++c)
      qv[g][c] = _mm256_mul_ps(_mm256_loadu_ps(q + g * C8 * 8 + c * 8), _mm256_set1_ps(scale));
  RowCursor<float> keys(k_base, table, block_size, kb, ko, first);
  __m256 part[kAvx2MaxGroup][8];
  for (int64_t t0 = 0; t0 < span; t0 += 8) {
    const int64_t n = std::min<int64_t>(8, span - t0);
    for (int64_t i = 0; i < 8; ++i) {
      if (i >= n) {
        for (int64_t g = 0; g < group; ++g) part[g][i] = _mm256_setzero_ps();
        continue;
      }
      const float* k = keys.row();
      keys.next();
      __m256 row[C8];
      for (int c = 0; c < C8; ++c) row[c] = _mm256_loadu_ps(k + c * 8);
      for (int64_t g = 0; g < group; ++g) {
        __m256 acc = _mm256_mul_ps(qv[g][0], row[0]);
        for (int c = 1; c < C8; ++c) acc = _mm256_fmadd_ps(qv[g][c], row[c], acc);
        part[g][i] = acc;
      }
    }
    for (int64_t g = 0; g < group; ++g)
      _mm256_storeu_ps(&scores[g * padded + t0], transpose_sum8(part[g]));
  }
  float inv[kAvx2MaxGroup];
  for (int64_t g = 0; g < group; ++g)
    inv[g] = 1.f / exp_scores8(&scores[g * padded], span, sinks ? &sinks[g] : nullptr);
  __m256 acc[kAvx2MaxGroup][C8];
  for (int64_t g = 0; g < group; ++g)
    for (int c = 0; c < C8; ++c) acc[g][c] = _mm256_setzero_ps();
  const float* rows[kValueChunk];
  RowCursor<float> values(v_base, table, block_size, vb, vo, first);
  for (int64_t t0 = 0; t0 < span; t0 += kValueChunk) {
    const int64_t n = std::min<int64_t>(kValueChunk, span - t0);
    for (int64_t i = 0; i < n; ++i) {
      rows[i] = values.row();
      values.next();
    }
    for (int64_t g = 0; g < group; ++g) {
      __m256 a[C8];
      for (int c = 0; c < C8; ++c) a[c] = acc[g][c];
      const float* p = &scores[g * padded + t0];
      for (int64_t i = 0; i < n; ++i) {
        const __m256 w = _mm256_set1_ps(p[i]);
        for (int c = 0; c < C8; ++c) a[c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(rows[i] + c * 8), a[c]);
      }
      for (int c = 0; c < C8; ++c) acc[g][c] = a[c];
    }
  }
  for (int64_t g = 0; g < group; ++g)
    for (int c = 0; c < C8; ++c)
      _mm256_storeu_ps(out + g * C8 * 8 + c * 8, _mm256_mul_ps(acc[g][c], _mm256_set1_ps(inv[g])));
}
#endif

template <typename T>
using AttendFn = void (*)(const float*, int64_t, const T*, const T*, const int32_t*, int64_t,
                          int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const float*,
                          float, std::vector<float>&, std::vector<vf>&, float*);

template <typename T>
AttendFn<T> attend_for(int64_t head_dim, int64_t group) {
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, bf16_t>) {
    switch (head_dim) {
      case 32: return attend_one_dpbf16<2>;
      case 64: return attend_one_dpbf16<4>;
      case 96: return attend_one_dpbf16<6>;
      case 128: return attend_one_dpbf16<8>;
      case 256: return attend_one_dpbf16<16>;
      default: break;
    }
  }
#endif
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    if (group <= kAvx2MaxGroup) {
      switch (head_dim) {
        case 32: return attend_one_avx2<4>;
        case 64: return attend_one_avx2<8>;
        case 96: return attend_one_avx2<12>;
        case 128: return attend_one_avx2<16>;
        default: break;  // 16 and 256: the 16-lane code
      }
    }
  }
#endif
  switch (head_dim) {
    case 16: return attend_one<T, 1>;
    case 32: return attend_one<T, 2>;
    case 64: return attend_one<T, 4>;
    case 96: return attend_one<T, 6>;
    case 128: return attend_one<T, 8>;
    case 256: return attend_one<T, 16>;
    default: TORCH_CHECK(false, "decode_attention supports head_dim 16, 32, 64, 96, 128 and 256, got ", head_dim);
  }
}

template <typename T>
void decode_attention_impl(const at::Tensor& query, const at::Tensor& k_cache,
                           const at::Tensor& v_cache, const at::Tensor& block_tables,
                           const at::Tensor& seq_lens, double scale, int64_t sliding_window,
                           const c10::optional<at::Tensor>& sinks, at::Tensor& out) {
  const int64_t num_seqs = query.size(0), num_heads = query.size(1), head_dim = query.size(2);
  const int64_t block_size = k_cache.size(1), num_kv_heads = k_cache.size(2);
  const int64_t group = num_heads / num_kv_heads;
  const int64_t max_blocks = block_tables.size(1);
  // cache strides of the logical [num_blocks, block_size, num_kv_heads, head_dim] view
  const int64_t kb = k_cache.stride(0), ko = k_cache.stride(1), kh = k_cache.stride(2);
  const int64_t vb = v_cache.stride(0), vo = v_cache.stride(1), vh = v_cache.stride(2);
  const T* q_all = data_of<T>(query);
  const T* k_all = data_of<T>(k_cache);
  const T* v_all = data_of<T>(v_cache);
  const int32_t* tables = block_tables.data_ptr<int32_t>();
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  std::vector<float> sink_logits;
  if (sinks) {
    at::Tensor s = sinks->to(at::kFloat).contiguous();
    sink_logits.assign(s.data_ptr<float>(), s.data_ptr<float>() + s.numel());
  }
  T* out_all = mutable_data_of<T>(out);
  const float fscale = static_cast<float>(scale);
  const AttendFn<T> attend = attend_for<T>(head_dim, group);

  // Units of work: a single row, or (bf16 on AVX-512 BF16, no sliding window) a tile of
  // up to kTileRows consecutive rows of one prompt, which share their K/V reads.
  struct Unit {
    int64_t first, rows;
  };
  std::vector<Unit> units;
#if defined(__AVX512BF16__)
  const TileFn tile = std::is_same_v<T, bf16_t> && sliding_window <= 0 ? tile_for(head_dim) : nullptr;
#endif
  for (int64_t i = 0; i < num_seqs;) {
    int64_t n = 1;
#if defined(__AVX512BF16__)
    if (tile != nullptr) {
      const int32_t* t0 = tables + i * max_blocks;
      while (n < kTileRows && i + n < num_seqs && lens[i + n] == lens[i] + n &&
             std::memcmp(tables + (i + n) * max_blocks, t0,
                         std::min<int64_t>(max_blocks, (lens[i + n] + block_size - 1) / block_size) *
                             sizeof(int32_t)) == 0)
        ++n;
    }
#endif
    units.push_back({i, n});
    i += n;
  }
#if defined(__AVX512BF16__)
  // Phase 1: each prompt's K and V operands, laid out once for all its tiles (in chunks
  // of 64 keys per task) before any tile runs.
  SharedOperands shared;
  std::vector<int64_t> prompt_of(units.size(), -1);
  const TransposeFn transpose = tile != nullptr ? transpose_for(head_dim) : nullptr;
  if (transpose != nullptr) {
    shared.head_dim = head_dim;
    for (size_t u = 0; u < units.size(); ++u) {
      const Unit& unit = units[u];
      if (unit.rows < 2) continue;
      const int64_t keys = lens[unit.first + unit.rows - 1];
      const bool continues = u > 0 && prompt_of[u - 1] >= 0 &&
                             lens[unit.first] == lens[unit.first - 1] + 1 &&
                             std::memcmp(tables + unit.first * max_blocks,
                                         tables + (unit.first - 1) * max_blocks,
                                         max_blocks * sizeof(int32_t)) == 0;
      if (continues)
        shared.prompts.back().keys = keys;
      else
        shared.prompts.push_back({unit.first, keys, 0});
      prompt_of[u] = static_cast<int64_t>(shared.prompts.size()) - 1;
    }
    int64_t size = 0;
    for (TilePrompt& p : shared.prompts) {
      p.offset = size;
      size += num_kv_heads * shared.head_size(p);
    }
    shared.storage.resize(size);
    struct Part {
      int64_t prompt, h, c0, c1;
    };
    std::vector<Part> parts;
    for (int64_t pi = 0; pi < static_cast<int64_t>(shared.prompts.size()); ++pi)
      for (int64_t h = 0; h < num_kv_heads; ++h)
        for (int64_t c = 0, chunks = shared.prompts[pi].padded() / 16; c < chunks; c += 4)
          parts.push_back({pi, h, c, std::min(c + 4, chunks)});
    std::atomic<int64_t> next_part{0};
    const int64_t num_parts = static_cast<int64_t>(parts.size());
    at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), num_parts), 1, [&](int64_t, int64_t) {
      for (int64_t i; (i = next_part.fetch_add(1, std::memory_order_relaxed)) < num_parts;) {
        const Part& part = parts[i];
        const TilePrompt& p = shared.prompts[part.prompt];
        if constexpr (std::is_same_v<T, bf16_t>)
          transpose(k_all + part.h * kh, v_all + part.h * vh, tables + p.seq * max_blocks,
                    block_size, kb, ko, vb, vo, p.keys, part.c0, part.c1,
                    shared.keys(part.prompt, part.h), shared.values(part.prompt, part.h));
      }
    });
  }
#endif
  // Costliest units first (rows x keys), and each thread takes the next task when it is
  // done with one: a static split of equal task counts left one thread waiting for the
  // other (their speeds differ with what else each core runs, and a prefill tile costs
  // many decode rows), and longest-first keeps the last tasks short.
  std::vector<int64_t> order(units.size());
  for (size_t u = 0; u < units.size(); ++u) order[u] = static_cast<int64_t>(u);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return units[a].rows * lens[units[a].first] > units[b].rows * lens[units[b].first];
  });
  const int64_t num_tasks = static_cast<int64_t>(units.size()) * num_kv_heads;
  std::atomic<int64_t> next_task{0};
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), num_tasks), 1, [&](int64_t, int64_t) {
    std::vector<float> q(group * head_dim), o(group * head_dim), scores;
    std::vector<vf> work;
#if defined(__AVX512BF16__)
    TileScratch scratch;
#endif
    for (int64_t task; (task = next_task.fetch_add(1, std::memory_order_relaxed)) < num_tasks;) {
      const int64_t u = order[task / num_kv_heads];
      const Unit unit = units[u];
      const int64_t h = task % num_kv_heads;
      const int64_t seq = unit.first;
      const int64_t len = lens[seq];
      TORCH_CHECK(len > 0, "decode_attention: sequence ", seq, " has no tokens");
      const int64_t row = (seq * num_heads + h * group) * head_dim;
#if defined(__AVX512BF16__)
      if (unit.rows > 1) {
        TORCH_INTERNAL_ASSERT(prompt_of[u] >= 0, "a prefill tile without its prompt's operands");
        if constexpr (std::is_same_v<T, bf16_t>)
          tile(q_all + row, out_all + row, num_heads * head_dim, unit.rows, group, len,
               sink_logits.empty() ? nullptr : &sink_logits[h * group], fscale,
               shared.keys(prompt_of[u], h), shared.values(prompt_of[u], h), scratch);
        continue;
      }
#endif
      const int64_t first = sliding_window > 0 ? std::max<int64_t>(0, len - sliding_window) : 0;
      for (int64_t i = 0; i < group * head_dim; ++i) q[i] = load(q_all[row + i]);
      attend(q.data(), group, k_all + h * kh, v_all + h * vh, tables + seq * max_blocks,
             block_size, kb, ko, vb, vo, first, len,
             sink_logits.empty() ? nullptr : &sink_logits[h * group], fscale, scores, work,
             o.data());
      for (int64_t i = 0; i < group * head_dim; ++i) store(&out_all[row + i], o[i]);
    }
  });
}

void check_cache(const at::Tensor& cache, const at::Tensor& query, const char* name) {
  TORCH_CHECK(cache.dim() == 4, name, " must be [num_blocks, block_size, num_kv_heads, head_dim]");
  TORCH_CHECK(cache.stride(3) == 1, name, "'s last dimension must be contiguous");
  TORCH_CHECK(cache.scalar_type() == query.scalar_type(), name, " dtype ", cache.scalar_type(),
              " differs from the query's ", query.scalar_type());
  TORCH_CHECK(cache.size(3) == query.size(2), name, " head_dim differs from the query's");
}

at::Tensor decode_attention(const at::Tensor& query, const at::Tensor& k_cache,
                            const at::Tensor& v_cache, const at::Tensor& block_tables,
                            const at::Tensor& seq_lens, double scale, int64_t sliding_window,
                            const c10::optional<at::Tensor>& sinks) {
  TORCH_CHECK(query.dim() == 3 && query.is_contiguous(), "query must be contiguous [seqs, heads, dim]");
  check_cache(k_cache, query, "k_cache");
  check_cache(v_cache, query, "v_cache");
  TORCH_CHECK(query.size(1) % k_cache.size(2) == 0, "num_heads must be a multiple of num_kv_heads");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && block_tables.is_contiguous() &&
                  block_tables.size(0) == query.size(0),
              "block_tables must be contiguous int32 [seqs, max_blocks]");
  TORCH_CHECK(seq_lens.scalar_type() == at::kInt && seq_lens.is_contiguous() &&
                  seq_lens.numel() == query.size(0),
              "seq_lens must be contiguous int32 [seqs]");
  if (sinks) TORCH_CHECK(sinks->numel() == query.size(1), "sinks must hold one logit per head");
  at::Tensor out = at::empty_like(query);
  if (query.scalar_type() == at::kFloat)
    decode_attention_impl<float>(query, k_cache, v_cache, block_tables, seq_lens, scale,
                                 sliding_window, sinks, out);
  else if (query.scalar_type() == at::kBFloat16)
    decode_attention_impl<bf16_t>(query, k_cache, v_cache, block_tables, seq_lens, scale,
                                  sliding_window, sinks, out);
  else
    TORCH_CHECK(false, "decode_attention supports float32 and bfloat16, got ", query.scalar_type());
  return out;
}

// ---------------------------------------------------------------- RMSNorm

// out = weight * rmsnorm(x) with HF's rounding: the norm in fp32, rounded to x's dtype, then
// multiplied by the weight and rounded again (for fp32 both roundings are the identity).
#if defined(__AVX512BF16__)
// One bf16 row of rms_norm_impl with AVX-512 conversions (n a multiple of 16): the same
// operations, order and roundings (the residual add rounded to bf16, squares summed in 16
// lanes then lane_sum, x * inv rounded, times the weight, rounded), but VCVTNEPS2BF16 for
// each rounding and the row re-read as bf16 (its values are bf16 already) instead of an
// fp32 copy. 62 -> 43-48 us per 405-row call with the residual add on a 2-core Zen 4.
inline void rms_norm_row_bf16(const bf16_t* x_row, bf16_t* res_row, const bf16_t* w,
                              bf16_t* o_row, int64_t n, float eps) {
  const bf16_t* row = res_row ? res_row : x_row;
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    __m512 v = bf16_lanes(x_row + i);
    if (res_row) {
      v = rounded_to_bf16(_mm512_add_ps(bf16_lanes(res_row + i), v));
      const __m256bh h = _mm512_cvtneps_pbh(v);
      std::memcpy(res_row + i, &h, sizeof h);
    }
    acc = _mm512_add_ps(acc, _mm512_mul_ps(v, v));
  }
  const float sum = lane_sum(as_vf(acc));
  const __m512 inv = _mm512_set1_ps(1.f / std::sqrt(sum / static_cast<float>(n) + eps));
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 normed = rounded_to_bf16(_mm512_mul_ps(bf16_lanes(row + i), inv));
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_mul_ps(bf16_lanes(w + i), normed));
    std::memcpy(o_row + i, &h, sizeof h);
  }
}
#endif

// With `residual`: residual += x first (rounded to its dtype, as torch's add), and the norm
// is taken of the sum; returns (out, residual).
template <typename T>
void rms_norm_impl(const at::Tensor& x, at::Tensor* residual, const at::Tensor& weight,
                   double eps, at::Tensor& out) {
  const int64_t rows = x.size(0), n = x.size(1);
  const T* xs = data_of<T>(x);
  T* res = residual ? mutable_data_of<T>(*residual) : nullptr;
  const T* w = data_of<T>(weight);
  T* o = mutable_data_of<T>(out);
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    // 16 lanes at a time (the sum of squares keeps kLanes partial sums either way, so the
    // vector and scalar code add in the same order), the tail one by one
    static_assert(kLanes == 16, "the vector loop keeps kLanes partial sums");
#if defined(__AVX512BF16__)
    if constexpr (std::is_same_v<T, bf16_t>) {
      if (n % 16 == 0) {
        for (int64_t r = begin; r < end; ++r)
          rms_norm_row_bf16(xs + r * n, res ? res + r * n : nullptr, w, o + r * n, n,
                            static_cast<float>(eps));
        return;
      }
    }
#endif
    std::vector<float> row(n);
    const int64_t whole = n / 16 * 16;
    for (int64_t r = begin; r < end; ++r) {
      const T* x_row = xs + r * n;
      T* res_row = res ? res + r * n : nullptr;
      T* o_row = o + r * n;
      vf acc{};
      for (int64_t i = 0; i < whole; i += 16) {
        vf v = load16(x_row + i);
        if (res_row) {
          v = round_as16(T{}, load16(res_row + i) + v);
          store16(res_row + i, v);
        }
        store16(&row[i], v);
        acc += v * v;
      }
      for (int64_t i = whole; i < n; ++i) {
        float v = load(x_row[i]);
        if (res_row) {
          v = round_as(T{}, load(res_row[i]) + v);
          store(&res_row[i], v);
        }
        row[i] = v;
      }
      float sum = lane_sum(acc);
      for (int64_t i = whole; i < n; ++i) sum += row[i] * row[i];
      const float inv = 1.f / std::sqrt(sum / static_cast<float>(n) + static_cast<float>(eps));
      for (int64_t i = 0; i < whole; i += 16)
        store16(o_row + i, load16(w + i) * round_as16(T{}, load16(&row[i]) * inv));
      for (int64_t i = whole; i < n; ++i)
        store(&o_row[i], load(w[i]) * round_as(T{}, row[i] * inv));
    }
  });
}

std::vector<at::Tensor> rms_norm(const at::Tensor& x, const c10::optional<at::Tensor>& residual,
                                 const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be contiguous [rows, hidden]");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.is_contiguous() &&
                  weight.numel() == x.size(1),
              "weight must be contiguous [hidden] in x's dtype");
  at::Tensor out = at::empty_like(x);
  at::Tensor res;
  if (residual) {
    res = *residual;
    TORCH_CHECK(res.sizes() == x.sizes() && res.is_contiguous() &&
                    res.scalar_type() == x.scalar_type(),
                "residual must be contiguous and match x");
  }
  at::Tensor* res_ptr = residual ? &res : nullptr;
  if (x.scalar_type() == at::kFloat)
    rms_norm_impl<float>(x, res_ptr, weight, eps, out);
  else if (x.scalar_type() == at::kBFloat16)
    rms_norm_impl<bf16_t>(x, res_ptr, weight, eps, out);
  else
    TORCH_CHECK(false, "rms_norm supports float32 and bfloat16, got ", x.scalar_type());
  if (residual) return {out, res};
  return {out};
}

// ---------------------------------------------------------------- RoPE + KV write

// qkv [tokens, (heads + 2 kv_heads) * dim] from the fused projection; cos and sin_signed
// [tokens, dim] in qkv's dtype (each token's rows of the RoPE tables). Returns q [tokens,
// heads, dim] rotated; k (rotated) and v go to the cache at slot_mapping (negative: skip).
// Rotate-half RoPE as the torch path computes it: x*cos + roll(x, dim/2)*sin_signed, each
// product and the sum rounded to x's dtype.
template <typename T>
void rope_write_kv_impl(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin_signed,
                        int64_t num_heads, int64_t num_kv_heads, at::Tensor& k_cache,
                        at::Tensor& v_cache, const at::Tensor& slot_mapping, at::Tensor& q_out) {
  const int64_t tokens = qkv.size(0), dim = q_out.size(2), half = dim / 2;
  const int64_t width = qkv.size(1);
  const int64_t block_size = k_cache.size(1), capacity = k_cache.size(0) * block_size;
  const int64_t kb = k_cache.stride(0), ko = k_cache.stride(1), kh = k_cache.stride(2);
  const int64_t vb = v_cache.stride(0), vo = v_cache.stride(1), vh = v_cache.stride(2);
  const T* src = data_of<T>(qkv);
  const int64_t* slots = slot_mapping.data_ptr<int64_t>();
  const T* cos_rows = data_of<T>(cos);
  const T* sin_rows = data_of<T>(sin_signed);
  T* q = mutable_data_of<T>(q_out);
  T* kc = mutable_data_of<T>(k_cache);
  T* vc = mutable_data_of<T>(v_cache);
  at::parallel_for(0, tokens, 4, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T* c = cos_rows + t * dim;
      const T* s = sin_rows + t * dim;
      const int64_t slot = slots[t];
      TORCH_CHECK(slot < capacity, "slot ", slot, " is outside the cache (", capacity, " slots)");
      const int64_t block = slot >= 0 ? slot / block_size : 0, offset = slot >= 0 ? slot % block_size : 0;
      for (int64_t h = 0; h < num_heads + num_kv_heads; ++h) {
        if (h >= num_heads && slot < 0) break;
        const T* x = src + t * width + h * dim;
        T* dst = h < num_heads ? q + (t * num_heads + h) * dim
                               : kc + block * kb + offset * ko + (h - num_heads) * kh;
        if (half % 16 == 0) {  // 16 lanes at a time: the same products, roundings and sum
          for (int64_t d = 0; d < dim; d += 16) {
            const vf rolled = load16(x + (d < half ? d + half : d - half));
            const vf a = round_as16(T{}, load16(x + d) * load16(c + d));
            const vf b = round_as16(T{}, rolled * load16(s + d));
            store16(dst + d, a + b);
          }
          continue;
        }
        for (int64_t d = 0; d < dim; ++d) {
          const float rolled = load(x[d < half ? d + half : d - half]);
          const float a = round_as(T{}, load(x[d]) * load(c[d]));
          const float b = round_as(T{}, rolled * load(s[d]));
          store(&dst[d], a + b);
        }
      }
      if (slot < 0) continue;
      for (int64_t h = 0; h < num_kv_heads; ++h) {
        const T* x = src + t * width + (num_heads + num_kv_heads + h) * dim;
        std::memcpy(vc + block * vb + offset * vo + h * vh, x, dim * sizeof(T));
      }
    }
  });
}

at::Tensor rope_write_kv(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin_signed,
                         int64_t num_heads, int64_t num_kv_heads, at::Tensor k_cache,
                         at::Tensor v_cache, const at::Tensor& slot_mapping) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.is_contiguous(), "qkv must be contiguous [tokens, width]");
  const int64_t dim = k_cache.size(3), tokens = qkv.size(0);
  TORCH_CHECK(qkv.size(1) == (num_heads + 2 * num_kv_heads) * dim,
              "qkv width must be (heads + 2 kv_heads) * head_dim");
  TORCH_CHECK(dim % 2 == 0, "head_dim must be even");
  TORCH_CHECK(k_cache.size(2) == num_kv_heads && v_cache.size(2) == num_kv_heads,
              "the caches must hold num_kv_heads heads");
  TORCH_CHECK(k_cache.stride(3) == 1 && v_cache.stride(3) == 1,
              "the caches' last dimension must be contiguous");
  TORCH_CHECK(k_cache.scalar_type() == qkv.scalar_type() && v_cache.scalar_type() == qkv.scalar_type(),
              "the caches must have qkv's dtype");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.is_contiguous() &&
                  slot_mapping.numel() == tokens,
              "slot_mapping must be contiguous int64 [tokens]");
  for (const at::Tensor* table : {&cos, &sin_signed})
    TORCH_CHECK(table->scalar_type() == qkv.scalar_type() && table->is_contiguous() &&
                    table->numel() == tokens * dim,
                "cos and sin must be contiguous [tokens, head_dim] in qkv's dtype");
  at::Tensor q = at::empty({tokens, num_heads, dim}, qkv.options());
  if (qkv.scalar_type() == at::kFloat)
    rope_write_kv_impl<float>(qkv, cos, sin_signed, num_heads, num_kv_heads, k_cache, v_cache,
                              slot_mapping, q);
  else if (qkv.scalar_type() == at::kBFloat16)
    rope_write_kv_impl<bf16_t>(qkv, cos, sin_signed, num_heads, num_kv_heads, k_cache, v_cache,
                               slot_mapping, q);
  else
    TORCH_CHECK(false, "rope_write_kv supports float32 and bfloat16, got ", qkv.scalar_type());
  return q;
}

// ---------------------------------------------------------------- SiLU(gate) * up

// SiLU in fp32 (vexp: within 2 ulp of expf), rounded to the dtype, times up, rounded:
// the torch path's two roundings for bf16. 16 lanes.
template <typename T>
inline void silu_mul16(const T* gate, const T* up, T* out) {
  const vf g = load16(gate);
  store16(out, round_as16(T{}, g / (1.f + vexp(-g))) * load16(up));
}

#if defined(__AVX512BF16__)
// The same for bf16 with AVX-512 intrinsics: 0.32 -> 0.17 ms for 400 rows of 1536 on 2
// Zen 4 cores (the generic code's exp without fused multiply-adds cost ~60 cycles per 16
// lanes). cephes_exp, an exact division, and the bf16 roundings where the torch path rounds
// (the SiLU, then the product; round-to-nearest-even): on 3M random values it equalled
// torch's result bit for bit.
inline void silu_mul16(const bf16_t* gate, const bf16_t* up, bf16_t* out) {
  const __m512 g = bf16_lanes(gate);
  const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.f), cephes_exp(_mm512_sub_ps(_mm512_setzero_ps(), g)));
  const __m512 silu = rounded_to_bf16(_mm512_div_ps(g, d));
  const __m256bh product = _mm512_cvtneps_pbh(_mm512_mul_ps(silu, bf16_lanes(up)));
  std::memcpy(out, &product, sizeof product);
}
#endif

template <typename T>
void silu_mul_impl(const at::Tensor& gate_up, at::Tensor& out) {
  const int64_t rows = gate_up.size(0), n = out.size(1);
  const T* src = data_of<T>(gate_up);
  T* o = mutable_data_of<T>(out);
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* gate = src + r * 2 * n;
      const T* up = gate + n;
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) silu_mul16(gate + i, up + i, &o[r * n + i]);
      for (; i < n; ++i) {
        const float g = load(gate[i]);
        store(&o[r * n + i], round_as(T{}, g / (1.f + std::exp(-g))) * load(up[i]));
      }
    }
  });
}

at::Tensor silu_mul(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.is_contiguous() && gate_up.size(1) % 2 == 0,
              "gate_up must be contiguous [rows, 2 * intermediate]");
  at::Tensor out = at::empty({gate_up.size(0), gate_up.size(1) / 2}, gate_up.options());
  if (gate_up.scalar_type() == at::kFloat)
    silu_mul_impl<float>(gate_up, out);
  else if (gate_up.scalar_type() == at::kBFloat16)
    silu_mul_impl<bf16_t>(gate_up, out);
  else
    TORCH_CHECK(false, "silu_mul supports float32 and bfloat16, got ", gate_up.scalar_type());
  return out;
}

// ---------------------------------------------------------------- blocks of 32 codes

// Quantised weights in blocks of 32 columns, each with an fp32 scale d: the dot products
// sum_b d[j, b] * (x[r, block b] . q[j, block b]) of up to kRowsPerPass rows of x against
// output columns [begin, end); out[r * n + j] gets the result.
//
// The rows come rounded to 16-bit integers per block (RoundedRows), so that a block's dot
// product is integer multiply-adds (vpmaddwd: 16 products per instruction) of the codes
// widened to 16 bits, once per block for every row of the pass. Widening the codes to
// fp32 instead cost ~24 instructions per block at one row: the 4-bit matmul ran at 60%
// of memory bandwidth, limited by instructions, not bytes. 16 bits per block keep the
// activations within 2^-16 of each block's largest value, 128x finer than the bf16
// activations of the AVX-512 BF16 path (llama.cpp rounds them to 8 bits).
constexpr int64_t kRowsPerPass = 8;

// 32 codes of the 8-bit LM head: signed bytes, in order.
struct Q8Codes {
  static constexpr int64_t kBlockBytes = 32;
  static int code(const uint8_t* block, int i) { return static_cast<int8_t>(block[i]); }
};

// Rows of x rounded to 16 bits per 32-column block, q = round(x * 32767 / max |x|), with
// per (row, block) the scale max |x| / 32767 and the block's sum of rounded values times
// that scale, which the 4-bit kernel's minimum term multiplies: the result is then exactly
// rounded x times the weight (for Q4_0, m = -8 d, the unrounded sums would pair the
// rounding error with d q, twice |w|). Made by rounded_rows, below.
struct RoundedRows {
  std::vector<int16_t> values;  // [rows, k]
  std::vector<float> scales;    // [rows, k / 32]
  std::vector<float> sums;      // [rows, k / 32]
};

#if defined(__AVX2__) && defined(__FMA__)
// acc + a . b per 32-bit lane: each lane's two int16 products summed, then added. One
// VPDPWSSD where the build has 256-bit VNNI (AVX-VNNI: Intel client cores since Alder
// Lake; AVX-512 VNNI with VL: Ice Lake and Cascade Lake Xeons, Zen 4), else VPMADDWD and
// VPADDD, which the 4-bit kernels' inner loops are bound by on a CPU without it. The
// same integers either way: both wrap, and no sum here nears int32's range.
inline __m256i dot_pairs(__m256i acc, __m256i a, __m256i b) {
#if defined(__AVXVNNI__)
  return _mm256_dpwssd_avx_epi32(acc, a, b);
#elif defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpwssd_epi32(acc, a, b);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

// A block's 32 codes as two vectors of 16 int16 lanes, in element order.
inline void widen16(Q8Codes, const uint8_t* block, __m256i* w) {
  w[0] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
  w[1] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16)));
}

// Products fit int32: |q| <= 32767, |code| <= 127, four products per lane.
template <typename Codes, int R>
void scaled_block_dots(const int16_t* x, const float* x_scales, int64_t k, const uint8_t* codes,
                       const float* scales, int64_t n, int64_t begin, int64_t end, float* out) {
  const int64_t blocks = k / 32;
  for (int64_t j = begin; j < end; ++j) {
    const uint8_t* row = codes + j * blocks * Codes::kBlockBytes;
    const float* d = scales + j * blocks;
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      __m256i w[2];
      widen16(Codes{}, row + b * Codes::kBlockBytes, w);
      for (int r = 0; r < R; ++r) {
        const __m256i* xr = reinterpret_cast<const __m256i*>(x + r * k + b * 32);
        const __m256i dot =
            dot_pairs(_mm256_madd_epi16(_mm256_loadu_si256(xr), w[0]), _mm256_loadu_si256(xr + 1), w[1]);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d[b] * x_scales[r * blocks + b]),
                                 acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) out[r * n + j] = hsum8(acc[r]);
  }
}
#else
template <typename Codes, int R>
void scaled_block_dots(const int16_t* x, const float* x_scales, int64_t k, const uint8_t* codes,
                       const float* scales, int64_t n, int64_t begin, int64_t end, float* out) {
  const int64_t blocks = k / 32;
  for (int64_t j = begin; j < end; ++j)
    for (int r = 0; r < R; ++r) {
      float total = 0.f;
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* block = codes + (j * blocks + b) * Codes::kBlockBytes;
        int32_t dot = 0;
        for (int i = 0; i < 32; ++i) dot += x[r * k + b * 32 + i] * Codes::code(block, i);
        total += scales[j * blocks + b] * x_scales[r * blocks + b] * static_cast<float>(dot);
      }
      out[r * n + j] = total;
    }
}
#endif

// scaled_block_dots for any number of rows, kRowsPerPass at a time.
template <typename Codes>
void scaled_dots(const RoundedRows& x, int64_t rows, int64_t k, const uint8_t* codes,
                 const float* scales, int64_t n, int64_t begin, int64_t end, float* out) {
  const int64_t blocks = k / 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kRowsPerPass) {
    const int16_t* xr = x.values.data() + r0 * k;
    const float* xs = x.scales.data() + r0 * blocks;
    float* o = out + r0 * n;
    switch (std::min<int64_t>(kRowsPerPass, rows - r0)) {
      case 1: scaled_block_dots<Codes, 1>(xr, xs, k, codes, scales, n, begin, end, o); break;
      case 2: scaled_block_dots<Codes, 2>(xr, xs, k, codes, scales, n, begin, end, o); break;
      case 3: scaled_block_dots<Codes, 3>(xr, xs, k, codes, scales, n, begin, end, o); break;
      case 4: scaled_block_dots<Codes, 4>(xr, xs, k, codes, scales, n, begin, end, o); break;
      case 5: scaled_block_dots<Codes, 5>(xr, xs, k, codes, scales, n, begin, end, o); break;
      case 6: scaled_block_dots<Codes, 6>(xr, xs, k, codes, scales, n, begin, end, o); break;
      case 7: scaled_block_dots<Codes, 7>(xr, xs, k, codes, scales, n, begin, end, o); break;
      default: scaled_block_dots<Codes, 8>(xr, xs, k, codes, scales, n, begin, end, o); break;
    }
  }
}

// ---------------------------------------------------------------- 4-bit weights, fp32 rows

// The layout of q4_linear.py's _pack_own: per group of 8 output columns and block of 32
// columns of k, 128 bytes of codes, chunk c (16 bytes) holding in its low nibbles the
// block's k pair c and in its high nibbles k pair c + 8, byte i = column i / 2 at k
// parity i % 2: widened to 16 bits, a chunk's nibbles are the second operand of vpmaddwd
// against a row's broadcast (x_2p, x_2p+1), which leaves each column's two products in
// its own lane. scales [N / 8, K / 32, 2, 8] fp32: per column, d and m (w = d q + m).
//
// Why lanes = columns: with lanes = k (the first layout), every (row, column, block) paid
// a conversion, a scale and a final lane sum, ~10 instructions per 32 products, and the
// minimum's term ran as scalar code: 16 rows took 37 ms for SmolLM2's 120 projections on
// a Zen 3, 2.2x the dense fp32 GEMM's time per product. Here a row's block costs 16
// broadcasts, 16 vpmaddwd and 16 adds for 256 products, then one conversion and two fmas
// for all 8 columns (the minimum's term included).
constexpr int64_t kQ4Columns = 8;       // output columns per group (a ymm of fp32 lanes)
constexpr int64_t kQ4GroupBytes = 128;  // a block's codes for one group of columns
constexpr int kQ4MaxRows = 6;           // rows per pass: 2 accumulators each in 16 ymm

#if defined(__AVX2__) && defined(__FMA__)
// One block of 32 floats as above: values out, scale and scaled sum returned through refs.
inline void round_block(const float* xb, int16_t* q, float& scale, float& sum) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 v[4], top = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_loadu_ps(xb + 8 * i);
    top = _mm256_max_ps(top, _mm256_andnot_ps(sign, v[i]));
  }
  __m128 t = _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
  t = _mm_max_ps(t, _mm_movehl_ps(t, t));
  t = _mm_max_ss(t, _mm_shuffle_ps(t, t, 1));
  const float most = _mm_cvtss_f32(t);
  const float inv = most > 0.f ? 32767.f / most : 0.f;
  const __m256 limit = _mm256_set1_ps(32767.f), scale_by = _mm256_set1_ps(inv);
  __m256i ints[4], total = _mm256_setzero_si256();
  for (int i = 0; i < 4; ++i) {
    const __m256 scaled = _mm256_min_ps(limit, _mm256_max_ps(-limit, _mm256_mul_ps(v[i], scale_by)));
    ints[i] = _mm256_cvtps_epi32(scaled);  // round to nearest even, as nearbyint
    total = _mm256_add_epi32(total, ints[i]);
  }
  // packs interleaves 128-bit lanes: [a0-3 b0-3 a4-7 b4-7]; the permute restores order
  for (int i = 0; i < 2; ++i)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 16 * i),
                        _mm256_permute4x64_epi64(_mm256_packs_epi32(ints[2 * i], ints[2 * i + 1]), 0xd8));
  scale = most / 32767.f;
  sum = scale * static_cast<float>(hsum8i(total));
}
#else
inline void round_block(const float* xb, int16_t* q, float& scale, float& sum) {
  float most = 0.f;
  for (int i = 0; i < 32; ++i) most = std::max(most, std::fabs(xb[i]));
  const float inv = most > 0.f ? 32767.f / most : 0.f;
  int32_t total = 0;
  for (int i = 0; i < 32; ++i) {
    q[i] = static_cast<int16_t>(std::nearbyint(std::min(32767.f, std::max(-32767.f, xb[i] * inv))));
    total += q[i];
  }
  scale = most / 32767.f;
  sum = scale * static_cast<float>(total);
}
#endif

// Rows of x rounded (round_block): values [rows, k], scales and sums [rows, k / 32].
RoundedRows rounded_rows(const float* x, int64_t rows, int64_t k) {
  const int64_t blocks = k / 32;
  RoundedRows out{std::vector<int16_t>(rows * k), std::vector<float>(rows * blocks),
                  std::vector<float>(rows * blocks)};
  at::parallel_for(0, rows * blocks, 256, [&](int64_t begin, int64_t end) {
    for (int64_t rb = begin; rb < end; ++rb)
      round_block(x + rb * 32, &out.values[rb * 32], out.scales[rb], out.sums[rb]);
  });
  return out;
}

#if defined(__AVX2__) && defined(__FMA__)
// A 16-byte chunk of the layout above widened to 16-bit lanes: k pair c (low nibbles) and
// k pair c + 8 (high nibbles), lane = 2 x column + k parity.
inline void widen_chunk(const uint8_t* chunk, __m256i& low, __m256i& high) {
  const __m128i low4 = _mm_set1_epi8(0x0f);
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(chunk));
  low = _mm256_cvtepu8_epi16(_mm_and_si128(bytes, low4));
  high = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(bytes, 4), low4));
}

// R rows (stride k) of rounded x times one group of 8 columns: out[r * n + 0..7].
template <int R>
void q4_group_rows(const int16_t* x, const float* scales_x, const float* sums_x, int64_t k,
                   const uint8_t* codes, const float* scales, float* out, int64_t n) {
  const int64_t blocks = k / 32;
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* chunk = codes + b * kQ4GroupBytes;
    __m256i dot[R];
    for (int r = 0; r < R; ++r) dot[r] = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c) {
      __m256i low, high;
      widen_chunk(chunk + 16 * c, low, high);
      for (int r = 0; r < R; ++r) {
        const int32_t* pairs = reinterpret_cast<const int32_t*>(x + r * k + b * 32);
        // |sum| <= 32 products of 32767 x 15 per lane: far inside int32
        dot[r] = dot_pairs(dot[r], _mm256_set1_epi32(pairs[c]), low);
        dot[r] = dot_pairs(dot[r], _mm256_set1_epi32(pairs[c + 8]), high);
      }
    }
    const __m256 d = _mm256_loadu_ps(scales + b * 16), m = _mm256_loadu_ps(scales + b * 16 + 8);
    for (int r = 0; r < R; ++r) {
      acc[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(sums_x[r * blocks + b]), acc[r]);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[r]),
                               _mm256_mul_ps(d, _mm256_set1_ps(scales_x[r * blocks + b])), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) _mm256_storeu_ps(out + r * n, acc[r]);
}
#else
template <int R>
void q4_group_rows(const int16_t* x, const float* scales_x, const float* sums_x, int64_t k,
                   const uint8_t* codes, const float* scales, float* out, int64_t n) {
  const int64_t blocks = k / 32;
  for (int r = 0; r < R; ++r)
    for (int col = 0; col < kQ4Columns; ++col) {
      float total = 0.f;
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* chunk = codes + b * kQ4GroupBytes;
        int32_t dot = 0;
        for (int c = 0; c < 8; ++c)
          for (int parity = 0; parity < 2; ++parity) {
            const int lane = 2 * col + parity;
            dot += x[r * k + b * 32 + 2 * c + parity] * (chunk[16 * c + lane] & 15);
            dot += x[r * k + b * 32 + 2 * (c + 8) + parity] * (chunk[16 * c + lane] >> 4);
          }
        total += scales[b * 16 + 8 + col] * sums_x[r * blocks + b];
        total += static_cast<float>(dot) * (scales[b * 16 + col] * scales_x[r * blocks + b]);
      }
      out[r * n + col] = total;
    }
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
// From kQ4PanelFrom rows on: the columns in panels of kPanelGroups groups (16 columns),
// kPanelRows rows at a time (q4_panel_tile), with 12 int32 accumulators: each row's
// broadcast k pair serves the panel's two vpmaddwd, each weight vector (loaded, not
// broadcast) the six rows. A thread widens each of its panels' codes once per call into
// [blocks, 16 k pairs, groups, 8] int32 pairs (L1/L2) and runs every row against them.
// Per block, each (row, column) takes the same two fmas in the same order as in
// q4_group_rows, so the two kernels agree bit for bit; the fp32 sums live in a small
// array in L1 rather than in registers, which the accumulators, the two weight vectors
// and the broadcast fill. On a Zen 3 (SmolLM2's four projection shapes x 30 layers, 2
// threads; bench/cpu_kernels.py --sections q4_fp32_gemms) against the dense fp32 GEMM
// (MKL): 3.0x at 16 rows, 2.1x at 64, 1.41x at 405 (402 against 568 ms), 1.28x at 1024;
// from 16 rows on it beat the layout it replaced (16 rows in the lanes x 4 columns, whose
// 16 fp32 and int32 accumulators spilled: 1.5x slower at 405 rows).
constexpr int64_t kQ4PanelFrom = 16;
constexpr int kPanelGroups = 2;
constexpr int kPanelRows = 6;

// G groups' codes widened to int32 pairs [blocks, 16 k pairs, G, 8 columns].
template <int G>
void widen_panel(const uint8_t* codes, int64_t blocks, int32_t* pairs) {
  for (int g = 0; g < G; ++g)
    for (int64_t b = 0; b < blocks; ++b)
      for (int c = 0; c < 8; ++c) {
        __m256i low, high;
        widen_chunk(codes + (g * blocks + b) * kQ4GroupBytes + 16 * c, low, high);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(pairs + ((b * 16 + c) * G + g) * 8), low);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(pairs + ((b * 16 + c + 8) * G + g) * 8), high);
      }
}

// R rows of rounded x (RoundedRows by rows) times a widened panel of G groups:
// out[r * n + 0 .. 8 G).
template <int R, int G>
void q4_panel_tile(const int16_t* x, const float* scales_x, const float* sums_x, int64_t k,
                   const int32_t* weight, const float* scales, float* out, int64_t n) {
  const int64_t blocks = k / 32;
  alignas(32) float acc[R][G][8] = {};
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i dot[R][G];
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) dot[r][g] = _mm256_setzero_si256();
    const int32_t* w = weight + b * 16 * G * 8;
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) {
      __m256i wv[G];
      for (int g = 0; g < G; ++g) wv[g] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (p * G + g) * 8));
      for (int r = 0; r < R; ++r) {
        const __m256i pair = _mm256_set1_epi32(reinterpret_cast<const int32_t*>(x + r * k + b * 32)[p]);
        for (int g = 0; g < G; ++g) dot[r][g] = dot_pairs(dot[r][g], pair, wv[g]);
      }
      // keeps each accumulator one chain in a register: GCC otherwise reassociates the
      // integer adds into trees whose partial products it spills (half the speed)
      for (int r = 0; r < R; ++r)
        for (int g = 0; g < G; ++g) __asm__("" : "+x"(dot[r][g]));
    }
    for (int r = 0; r < R; ++r) {
      const __m256 xs = _mm256_set1_ps(scales_x[r * blocks + b]);
      const __m256 sum = _mm256_set1_ps(sums_x[r * blocks + b]);
      for (int g = 0; g < G; ++g) {
        const float* s = scales + (g * blocks + b) * 16;
        __m256 a = _mm256_load_ps(acc[r][g]);
        a = _mm256_fmadd_ps(_mm256_loadu_ps(s + 8), sum, a);
        a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[r][g]), _mm256_mul_ps(_mm256_loadu_ps(s), xs), a);
        _mm256_store_ps(acc[r][g], a);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) _mm256_storeu_ps(out + r * n + 8 * g, _mm256_load_ps(acc[r][g]));
}

// Rows [first, last) of x times one widened panel.
template <int G>
void q4_panel_rows(const RoundedRows& x, int64_t first, int64_t last, int64_t k,
                   const int32_t* weight, const float* scales, float* out, int64_t n) {
  const int64_t blocks = k / 32;
  for (int64_t r0 = first; r0 < last; r0 += kPanelRows) {
    const int16_t* xr = x.values.data() + r0 * k;
    const float* xs = x.scales.data() + r0 * blocks;
    const float* sums = x.sums.data() + r0 * blocks;
    float* o = out + r0 * n;
    switch (std::min<int64_t>(kPanelRows, last - r0)) {
      case 1: q4_panel_tile<1, G>(xr, xs, sums, k, weight, scales, o, n); break;
      case 2: q4_panel_tile<2, G>(xr, xs, sums, k, weight, scales, o, n); break;
      case 3: q4_panel_tile<3, G>(xr, xs, sums, k, weight, scales, o, n); break;
      case 4: q4_panel_tile<4, G>(xr, xs, sums, k, weight, scales, o, n); break;
      case 5: q4_panel_tile<5, G>(xr, xs, sums, k, weight, scales, o, n); break;
      default: q4_panel_tile<kPanelRows, G>(xr, xs, sums, k, weight, scales, o, n); break;
    }
  }
}

constexpr int64_t kPanelWidenedBytes = 128 << 10;  // a thread's widened panels at a time
constexpr int64_t kPanelRowChunk = 60;  // rows per pass over them (60 x 1536 x 2 B of x)

// The threads take batches of consecutive panels (the last panel may hold one group) from
// a shared counter, ~8 batches per thread, so a core the VM slows does fewer of them
// (the static halves measured 1-6% slower for a whole prefill); each batch's panels are
// widened together (up to kPanelWidenedBytes), then kPanelRowChunk rows at a time run
// through each, so the widened codes and the chunk's rows stay in L2.
void q4_by_panels(const RoundedRows& x, int64_t rows, int64_t k, const uint8_t* codes,
                  const float* scales, int64_t groups, float* out) {
  const int64_t blocks = k / 32, n = groups * kQ4Columns;
  const int64_t panels = (groups + kPanelGroups - 1) / kPanelGroups;
  const int64_t panel_ints = kPanelGroups * blocks * 128;
  const int64_t at_once = std::max<int64_t>(1, kPanelWidenedBytes / (panel_ints * 4));
  const int64_t batch = std::min(at_once, std::max<int64_t>(1, panels / (8 * at::get_num_threads())));
  const int64_t batches = (panels + batch - 1) / batch;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), batches), 1, [&](int64_t, int64_t) {
    std::vector<int32_t> weight(batch * panel_ints);
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < batches;) {
      const int64_t first = i * batch, last = std::min(panels, first + batch);
      // f(std::integral_constant<int, G>{}, g0, widened codes) for each panel of the batch:
      // G = 2 groups, or 1 for a last panel holding one
      auto each_panel = [&](auto&& f) {
        for (int64_t panel = first; panel < last; ++panel) {
          const int64_t g0 = panel * kPanelGroups;
          int32_t* w = weight.data() + (panel - first) * panel_ints;
          if (groups - g0 >= 2)
            f(std::integral_constant<int, 2>{}, g0, w);
          else
            f(std::integral_constant<int, 1>{}, g0, w);
        }
      };
      each_panel([&](auto G, int64_t g0, int32_t* w) {
        widen_panel<decltype(G)::value>(codes + g0 * blocks * kQ4GroupBytes, blocks, w);
      });
      for (int64_t r0 = 0; r0 < rows; r0 += kPanelRowChunk) {
        const int64_t r1 = std::min(rows, r0 + kPanelRowChunk);
        each_panel([&](auto G, int64_t g0, const int32_t* w) {
          q4_panel_rows<decltype(G)::value>(x, r0, r1, k, w, scales + g0 * blocks * 2 * kQ4Columns,
                                            out + g0 * kQ4Columns, n);
        });
      }
    }
  });
}
#endif

// x [M, K] fp32 @ W.T for W in GGUF's 4-bit blocks laid out as above: codes [N / 8, K / 32,
// 128] and scales [N / 8, K / 32, 2, 8] fp32. Why our own: aten's int4 kernel with fp32
// activations ran 3.4-5.6x slower than the dense fp32 matmul on an AVX2 Zen 3, so a CPU
// without native bf16 decoded from 32-bit weights, reading 8x the bytes. x is rounded to
// 16 bits per block (RoundedRows) and sum_k x_k (d q_k + m) computed as d (sum_k x_k q_k)
// + m (sum_k x_k): the result is rounded x times the dense path's weights, to fp32
// rounding. vpmaddwd does 16 products per instruction, twice an fp32 fma's 8, so with
// enough rows this beats the dense fp32 GEMM too.
at::Tensor q4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kFloat,
              "x must be contiguous float32 [rows, in_features]");
  const int64_t rows = x.size(0), k = x.size(1);
  TORCH_CHECK(k % 32 == 0, "in_features must be a multiple of 32, got ", k);
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.is_contiguous() && codes.dim() == 3 &&
                  codes.size(1) == k / 32 && codes.size(2) == kQ4GroupBytes,
              "codes must be contiguous uint8 [out_features / 8, in_features / 32, 128]");
  const int64_t groups = codes.size(0), n = groups * kQ4Columns, blocks = k / 32;
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.dim() == 4 &&
                  scales.size(0) == groups && scales.size(1) == blocks && scales.size(2) == 2 &&
                  scales.size(3) == kQ4Columns,
              "scales must be contiguous float32 [out_features / 8, in_features / 32, 2, 8]");
  at::Tensor out = at::empty({rows, n}, x.options());
  if (rows == 0) return out;
  const uint8_t* c = codes.data_ptr<uint8_t>();
  const float* s = scales.data_ptr<float>();
  float* o = out.data_ptr<float>();
#if defined(__AVX2__) && defined(__FMA__)
  if (rows >= kQ4PanelFrom) {
    q4_by_panels(rounded_rows(x.data_ptr<float>(), rows, k), rows, k, c, s, groups, o);
    return out;
  }
#endif
  const RoundedRows rounded = rounded_rows(x.data_ptr<float>(), rows, k);
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const uint8_t* group_codes = c + g * blocks * kQ4GroupBytes;
      const float* group_scales = s + g * blocks * 2 * kQ4Columns;
      for (int64_t r0 = 0; r0 < rows; r0 += kQ4MaxRows) {
        const int16_t* xr = rounded.values.data() + r0 * k;
        const float* xs = rounded.scales.data() + r0 * blocks;
        const float* sums = rounded.sums.data() + r0 * blocks;
        float* into = o + r0 * n + g * kQ4Columns;
        switch (std::min<int64_t>(kQ4MaxRows, rows - r0)) {
          case 1: q4_group_rows<1>(xr, xs, sums, k, group_codes, group_scales, into, n); break;
          case 2: q4_group_rows<2>(xr, xs, sums, k, group_codes, group_scales, into, n); break;
          case 3: q4_group_rows<3>(xr, xs, sums, k, group_codes, group_scales, into, n); break;
          case 4: q4_group_rows<4>(xr, xs, sums, k, group_codes, group_scales, into, n); break;
          case 5: q4_group_rows<5>(xr, xs, sums, k, group_codes, group_scales, into, n); break;
          default: q4_group_rows<6>(xr, xs, sums, k, group_codes, group_scales, into, n); break;
        }
      }
    }
  });
  return out;
}

// ---------------------------------------------------------------- 4-bit weights, bf16 rows

#if defined(__AVX512BF16__)
// The layout of q4_linear.py's _pack_amx, shared by the AMX kernel and the AVX-512 BF16
// one below it: per group of 16 output columns and block of 32 columns of k, 256 bytes of
// codes, chunk c (32 bytes) holding rows 2c (low nibbles) and 2c + 1 (high nibbles) of the
// block's weights as bf16 pairs: row p is 16 columns x (k = 2p, 2p + 1), lane = column,
// which is what both TDPBF16PS (as its second tile) and VDPBF16PS (as a vector) take.
// scales [N / 16, K / 32, 2, 16] fp32: per column, d and e = m - 128 d.
constexpr int64_t kAmxColumns = 16;     // output columns per group (a tile's width)
constexpr int64_t kAmxBlockBytes = 256; // a block's codes for one group of columns

// One 32-byte chunk of codes as two vectors of bf16 128 + q (bits 0x4300 | q): rows 2c
// and 2c + 1 of the block.
inline void unpack_chunk(const uint8_t* chunk, __m512i& low_row, __m512i& high_row) {
  const __m512i low4 = _mm512_set1_epi16(0x000f), bias = _mm512_set1_epi16(0x4300);
  const __m512i z =
      _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk)));
  low_row = _mm512_ternarylogic_epi32(z, low4, bias, 0xEA);  // z & low4 | bias
  high_row = _mm512_or_si512(_mm512_srli_epi16(z, 4), bias);
}

// x for the tile-layout kernels (4-bit and 8-bit): contiguous bf16 rows of whole blocks.
void check_bf16_rows(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kBFloat16,
              "x must be contiguous bfloat16 [rows, in_features]");
  TORCH_CHECK(x.size(1) % 32 == 0, "in_features must be a multiple of 32, got ", x.size(1));
}

// The argument checks both 4-bit kernels share.
void check_tile_layout(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales) {
  check_bf16_rows(x);
  const int64_t blocks = x.size(1) / 32;
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.is_contiguous() && codes.dim() == 3 &&
                  codes.size(1) == blocks && codes.size(2) == kAmxBlockBytes,
              "codes must be contiguous uint8 [out_features / 16, in_features / 32, 256]");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.dim() == 4 &&
                  scales.size(0) == codes.size(0) && scales.size(1) == blocks &&
                  scales.size(2) == 2 && scales.size(3) == kAmxColumns,
              "scales must be contiguous float32 [out_features / 16, in_features / 32, 2, 16]");
}

// Per row and 32-column block of x: sum_k x_k, which the e = m - 128 d term multiplies
// (16 lanes of pair sums, then one lane sum: the scalar loop cost ~1 ms of a 16-row step).
std::vector<float> block_sums(const bf16_t* x, int64_t rows, int64_t k) {
  std::vector<float> sums(rows * (k / 32));
  const __m512i shift = _mm512_set1_epi32(16);
  for (size_t b = 0; b < sums.size(); ++b) {
    const __m512i pairs = _mm512_loadu_si512(x + b * 32);  // bf16 pairs: low and high halves
    const __m512 low = _mm512_castsi512_ps(_mm512_sllv_epi32(pairs, shift));
    const __m512 high = _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(-65536)));
    sums[b] = _mm512_reduce_add_ps(_mm512_add_ps(low, high));
  }
  return sums;
}

// One call of either kernel: its arguments checked, its output allocated, x's block sums.
struct TileCall {
  int64_t rows, k, blocks, groups, n;
  at::Tensor out;
  const bf16_t* x;
  std::vector<float> sums;
  const uint8_t* codes;
  const float* scales;
  bf16_t* o;
  TileCall(const at::Tensor& x_, const at::Tensor& codes_, const at::Tensor& scales_) {
    check_tile_layout(x_, codes_, scales_);
    rows = x_.size(0), k = x_.size(1), blocks = k / 32;
    groups = codes_.size(0), n = groups * kAmxColumns;
    out = at::empty({rows, n}, x_.options());
    x = data_of<bf16_t>(x_);
    sums = block_sums(x, rows, k);
    codes = codes_.data_ptr<uint8_t>();
    scales = scales_.data_ptr<float>();
    o = mutable_data_of<bf16_t>(out);
  }
};
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
// x [M, K] bf16 @ W.T for 4-bit weights on a CPU with AMX. A decode step of 16 sequences
// multiplies 16 rows by every weight: oneDNN's bf16 GEMM (AMX too) reads 2 bytes a
// weight, aten's int4 kernel reads a quarter of that but computes with AVX-512 and lost
// to it beyond 4-8 rows on a 2-core Sapphire Rapids. Here the 4-bit codes become bf16
// tiles and AMX multiplies them, so a weight costs half a byte of reading and a few
// instructions of unpacking at any row count up to 16.
//
// A tile multiply-add (TDPBF16PS) takes 32 columns of k, exactly one GGUF block, so each
// block's products come out of the tile unscaled and are scaled per output column:
// sum_k x_k (d q_k + m) = d (x . (128 + q)) + (m - 128 d) (sum_k x_k). 128 + q is a bf16
// whose bits are 0x4300 | q, so unpacking is an AND and an OR per 32 codes; the products
// of bf16 x with these small integers are exact in fp32 and summed in fp32, so the
// result is bf16 x times the file's weights to fp32 rounding (d and m stay fp32; aten's
// int4 kernel rounds them to bf16, and the dense bf16 path rounds each weight).
//
// Layout: see unpack_chunk above (q4_linear.py's _pack_amx, once at load).
constexpr int64_t kAmxRows = 16;  // rows of x per tile

// Tiles 0 and 1 (even blocks), 5 and 6 (odd blocks): two column groups' products (rows x
// 16 fp32); 2: rows of x (rows x 32 bf16); 3 and 4: the two groups' weights (16 k pairs x
// 16 columns).
void configure_tiles(int64_t rows) {
  TileConfig config;
  for (int t = 0; t < 7; ++t) {
    config.rows[t] = static_cast<uint8_t>(t == 3 || t == 4 ? 16 : rows);
    config.bytes_per_row[t] = 64;
  }
  _tile_loadconfig(&config);
}

// One block's 256 bytes of codes as a weight tile of bf16 128 + q (16 rows of 32 values).
inline void codes_to_tile(const uint8_t* codes, bf16_t* tile) {
  for (int c = 0; c < 8; ++c) {
    __m512i low_row, high_row;
    unpack_chunk(codes + 32 * c, low_row, high_row);
    _mm512_store_si512(tile + 64 * c, low_row);
    _mm512_store_si512(tile + 64 * c + 32, high_row);
  }
}

// acc[r] += d * products[r] + e * sum_r for one block's products of `rows` rows (d and e
// per output column: the 4-bit kernel's stored pair, or the 8-bit one's d and -2304 d).
inline void scale_block(const float* products, __m512 d, __m512 e, const float* sums,
                        int64_t sum_stride, int64_t rows, float* acc) {
  for (int64_t r = 0; r < rows; ++r) {
    __m512 a = _mm512_load_ps(acc + r * kAmxColumns);
    a = _mm512_fmadd_ps(_mm512_load_ps(products + r * kAmxColumns), d, a);
    a = _mm512_fmadd_ps(e, _mm512_set1_ps(sums[r * sum_stride]), a);
    _mm512_store_ps(acc + r * kAmxColumns, a);
  }
}

// One block's products for kGroups column groups: the block's rows of x against the
// weight tiles unpacked earlier, into product tiles 0 and 1 (even blocks) or 5 and 6 (odd
// blocks). GCC's tile intrinsics name their tile in the instruction text, so the tile
// numbers are literals.
template <int kGroups, bool kOdd>
inline void start_block(const bf16_t* x, int64_t k, const bf16_t (*weights)[kAmxRows * 32]) {
  _tile_loadd(2, x, k * sizeof(bf16_t));
  _tile_loadd(3, weights[0], 64);
  if constexpr (kGroups == 2) _tile_loadd(4, weights[1], 64);
  if constexpr (kOdd) {
    _tile_zero(5);
    _tile_dpbf16ps(5, 2, 3);
    if constexpr (kGroups == 2) {
      _tile_zero(6);
      _tile_dpbf16ps(6, 2, 4);
    }
  } else {
    _tile_zero(0);
    _tile_dpbf16ps(0, 2, 3);
    if constexpr (kGroups == 2) {
      _tile_zero(1);
      _tile_dpbf16ps(1, 2, 4);
    }
  }
}

template <int kGroups, bool kOdd>
inline void store_products(float (*products)[kAmxRows * kAmxColumns]) {
  if constexpr (kOdd) {
    _tile_stored(5, products[0], 64);
    if constexpr (kGroups == 2) _tile_stored(6, products[1], 64);
  } else {
    _tile_stored(0, products[0], 64);
    if constexpr (kGroups == 2) _tile_stored(1, products[1], 64);
  }
}

// Output columns [16 g, 16 (g + kGroups)) for up to 16 rows of x; the tiles are configured
// for `rows`. Two groups share each tile of x. The work is software-pipelined: while AMX
// multiplies block b, the vector units unpack block b + 1's codes and scale block b - 1's
// products, and even and odd blocks use different product tiles, so neither the unpacked
// weights nor the products are read right after they are stored (in order, the kernel
// ran at ~60% of the speed).
template <int kGroups>
void amx_column_groups(const bf16_t* x, int64_t rows, int64_t k, const float* sums,
                       const uint8_t* codes, const float* scales, int64_t g, bf16_t* out,
                       int64_t n) {
  const int64_t blocks = k / 32;
  alignas(64) bf16_t weights[2][kGroups][kAmxRows * 32];
  alignas(64) float products[2][kGroups][kAmxRows * kAmxColumns];
  alignas(64) float acc[kGroups][kAmxRows * kAmxColumns] = {};
  const auto unpack = [&](int64_t b, bf16_t (*into)[kAmxRows * 32]) {
    for (int i = 0; i < kGroups; ++i)
      codes_to_tile(codes + ((g + i) * blocks + b) * kAmxBlockBytes, into[i]);
  };
  const auto scale = [&](int64_t b, float (*from)[kAmxRows * kAmxColumns]) {
    for (int i = 0; i < kGroups; ++i) {
      const float* d_e = scales + ((g + i) * blocks + b) * 2 * kAmxColumns;
      scale_block(from[i], _mm512_loadu_ps(d_e), _mm512_loadu_ps(d_e + kAmxColumns), sums + b,
                  blocks, rows, acc[i]);
    }
  };
  unpack(0, weights[0]);
  for (int64_t b = 0; b < blocks; ++b) {
    const int now = b & 1;
    if (now == 0)
      start_block<kGroups, false>(x + b * 32, k, weights[0]);
    else
      start_block<kGroups, true>(x + b * 32, k, weights[1]);
    if (b + 1 < blocks) unpack(b + 1, weights[now ^ 1]);
    if (b > 0) scale(b - 1, products[now ^ 1]);
    if (now == 0)
      store_products<kGroups, false>(products[0]);
    else
      store_products<kGroups, true>(products[1]);
  }
  scale(blocks - 1, products[(blocks - 1) & 1]);
  for (int i = 0; i < kGroups; ++i)
    for (int64_t r = 0; r < rows; ++r)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * n + (g + i) * kAmxColumns),
                          reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(
                              _mm512_load_ps(acc[i] + r * kAmxColumns))));
}

at::Tensor q4_linear_amx(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales) {
  const TileCall t(x, codes, scales);
  TORCH_CHECK(amx_granted(), "Linux refused this process AMX tile state (arch_prctl)");
  for (int64_t r0 = 0; r0 < t.rows; r0 += kAmxRows) {
    const int64_t m = std::min(kAmxRows, t.rows - r0);
    const bf16_t* xr = t.x + r0 * t.k;
    const float* sums = t.sums.data() + r0 * t.blocks;
    bf16_t* out = t.o + r0 * t.n;
    at::parallel_for(0, t.groups, 2, [&](int64_t begin, int64_t end) {
      configure_tiles(m);
      int64_t g = begin;
      for (; g + 2 <= end; g += 2)
        amx_column_groups<2>(xr, m, t.k, sums, t.codes, t.scales, g, out, t.n);
      if (g < end) amx_column_groups<1>(xr, m, t.k, sums, t.codes, t.scales, g, out, t.n);
      _tile_release();
    });
  }
  return t.out;
}
// x [M, K] bf16 @ W.T for GGUF's Q8_0 weights (w = d q, q int8, one d per 32 columns) on a
// CPU with AMX: the LM head of small models, the largest matmul of a decode step
// (SmolLM2-135M: 49,152 x 576). oneDNN's bf16 GEMM reads 2 bytes a weight; this reads one
// (plus 4 bytes of d per 32) and multiplies on AMX at any row count up to 16.
//
// An int8 code is no bf16 bit pattern, but its halves are: with u = q + 128 (stored so at
// load), u = 16 h + l, and the bf16 numbers 128 + l (bits 0x4300 | l) and 2048 + 16 h (bits
// 0x4500 | h) are exact. Two tile multiplies of the block's x into one product tile give
// x . (128 + l) + x . (2048 + 16 h) = x . q + 2304 sum(x), each product exact in fp32, so a
// block adds d (P - 2304 sum(x)) per column: bf16 x times the file's weights to fp32
// rounding, as the 4-bit kernel (the dense bf16 path rounds every weight to bf16).
//
// Layout (q8_linear.py's with_amx_tiles, once at load): per group of 16 output columns and
// block of 32 columns of k, 512 bytes: row p (32 bytes) holds u of the 16 columns at k = 2p
// and 2p + 1, side by side (the VNNI order TDPBF16PS's second tile takes); d [N / 16, K / 32,
// 16] fp32.
constexpr int64_t kQ8BlockBytes = 512;  // a block's codes for one group of columns

// One block's codes as the two weight tiles: bf16 128 + (u & 15) and 2048 + 16 (u >> 4).
inline void q8_codes_to_tiles(const uint8_t* codes, bf16_t* low, bf16_t* high) {
  const __m512i low4 = _mm512_set1_epi16(0x000f), low_bias = _mm512_set1_epi16(0x4300);
  const __m512i high_bias = _mm512_set1_epi16(0x4500);
  for (int p = 0; p < 16; ++p) {
    const __m512i z =
        _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 32 * p)));
    _mm512_store_si512(low + 32 * p, _mm512_ternarylogic_epi32(z, low4, low_bias, 0xEA));
    _mm512_store_si512(high + 32 * p, _mm512_or_si512(_mm512_srli_epi16(z, 4), high_bias));
  }
}

// One block's product for a column group: x (tile 2) times both halves of the weights (tiles
// 3 and 4) into product tile 0 (even blocks) or 5 (odd ones).
template <bool kOdd>
inline void start_q8_block(const bf16_t* x, int64_t k, const bf16_t* low, const bf16_t* high) {
  _tile_loadd(2, x, k * sizeof(bf16_t));
  _tile_loadd(3, low, 64);
  _tile_loadd(4, high, 64);
  if constexpr (kOdd) {
    _tile_zero(5);
    _tile_dpbf16ps(5, 2, 3);
    _tile_dpbf16ps(5, 2, 4);
  } else {
    _tile_zero(0);
    _tile_dpbf16ps(0, 2, 3);
    _tile_dpbf16ps(0, 2, 4);
  }
}

// Output columns [16 g, 16 g + 16) for up to 16 rows of x, software-pipelined as
// amx_column_groups: AMX multiplies block b while the vector units unpack block b + 1 and
// scale block b - 1's products.
void amx_q8_columns(const bf16_t* x, int64_t rows, int64_t k, const float* sums,
                    const uint8_t* codes, const float* scales, int64_t g, bf16_t* out, int64_t n) {
  const int64_t blocks = k / 32;
  alignas(64) bf16_t weights[2][2][kAmxRows * 32];
  alignas(64) float products[2][kAmxRows * kAmxColumns];
  alignas(64) float acc[kAmxRows * kAmxColumns] = {};
  const uint8_t* group_codes = codes + g * blocks * kQ8BlockBytes;
  const float* group_scales = scales + g * blocks * kAmxColumns;
  const auto scale = [&](int64_t b, const float* from) {
    const __m512 d = _mm512_loadu_ps(group_scales + b * kAmxColumns);
    scale_block(from, d, _mm512_mul_ps(d, _mm512_set1_ps(-2304.f)), sums + b, blocks, rows, acc);
  };
  q8_codes_to_tiles(group_codes, weights[0][0], weights[0][1]);
  for (int64_t b = 0; b < blocks; ++b) {
    const int now = b & 1;
    if (now == 0)
      start_q8_block<false>(x + b * 32, k, weights[0][0], weights[0][1]);
    else
      start_q8_block<true>(x + b * 32, k, weights[1][0], weights[1][1]);
    if (b + 1 < blocks)
      q8_codes_to_tiles(group_codes + (b + 1) * kQ8BlockBytes, weights[now ^ 1][0],
                        weights[now ^ 1][1]);
    if (b > 0) scale(b - 1, products[now ^ 1]);
    if (now == 0)
      _tile_stored(0, products[0], 64);
    else
      _tile_stored(5, products[1], 64);
  }
  scale(blocks - 1, products[(blocks - 1) & 1]);
  for (int64_t r = 0; r < rows; ++r)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * n + g * kAmxColumns),
                        reinterpret_cast<__m256i>(
                            _mm512_cvtneps_pbh(_mm512_load_ps(acc + r * kAmxColumns))));
}

at::Tensor q8_linear_amx(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales) {
  check_bf16_rows(x);
  const int64_t rows = x.size(0), k = x.size(1), blocks = k / 32;
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.is_contiguous() && codes.dim() == 3 &&
                  codes.size(1) == blocks && codes.size(2) == kQ8BlockBytes,
              "codes must be contiguous uint8 [out_features / 16, in_features / 32, 512]");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.dim() == 3 &&
                  scales.size(0) == codes.size(0) && scales.size(1) == blocks &&
                  scales.size(2) == kAmxColumns,
              "scales must be contiguous float32 [out_features / 16, in_features / 32, 16]");
  TORCH_CHECK(amx_granted(), "Linux refused this process AMX tile state (arch_prctl)");
  const int64_t groups = codes.size(0), n = groups * kAmxColumns;
  at::Tensor out = at::empty({rows, n}, x.options());
  const bf16_t* xs = data_of<bf16_t>(x);
  const std::vector<float> sums = block_sums(xs, rows, k);
  const uint8_t* c = codes.data_ptr<uint8_t>();
  const float* d = scales.data_ptr<float>();
  bf16_t* o = mutable_data_of<bf16_t>(out);
  for (int64_t r0 = 0; r0 < rows; r0 += kAmxRows) {
    const int64_t m = std::min(kAmxRows, rows - r0);
    at::parallel_for(0, groups, 8, [&](int64_t begin, int64_t end) {
      configure_tiles(m);
      for (int64_t g = begin; g < end; ++g)
        amx_q8_columns(xs + r0 * k, m, k, sums.data() + r0 * blocks, c, d, g, o + r0 * n, n);
      _tile_release();
    });
  }
  return out;
}
#endif

#if defined(__AVX512BF16__)
// The AMX kernel's product on a CPU with AVX-512 BF16 but no AMX (Zen 4). A decode step of
// 16 sequences there multiplied 16 rows by oneDNN's bf16 GEMM, reading 2 bytes a weight
// (aten's int4 kernel lost to it beyond 4-8 rows). Here each chunk of codes becomes two
// vectors of bf16 128 + q pairs (unpack_chunk), lane = output column, and VDPBF16PS adds a
// row's broadcast (x_k, x_k+1) pair times them; a block's sums are scaled per column as in
// the AMX kernel (d (x . (128 + q)) + e sum(x)), with the same numerics: bf16 x times the
// file's weights to fp32 rounding. The unpacking is paid once per R rows; with fewer than
// 6 rows a row's block is summed in S interleaved chains so that VDPBF16PS's latency hides.
template <int R, int S>
void dpbf16_rows(const bf16_t* x, int64_t k, const float* sums, const uint8_t* codes,
                 const float* scales, bf16_t* out, int64_t n) {
  const int64_t blocks = k / 32;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m512 part[R][S];
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < S; ++i) part[r][i] = _mm512_setzero_ps();
    for (int c = 0; c < 8; ++c) {
      __m512i low_row, high_row;
      unpack_chunk(codes + b * kAmxBlockBytes + 32 * c, low_row, high_row);
      for (int r = 0; r < R; ++r) {
        const int32_t* pairs = reinterpret_cast<const int32_t*>(x + r * k + b * 32);
        __m512& even = part[r][(2 * c) % S];
        even = _mm512_dpbf16_ps(even, (__m512bh)low_row, (__m512bh)_mm512_set1_epi32(pairs[2 * c]));
        __m512& odd = part[r][(2 * c + 1) % S];
        odd = _mm512_dpbf16_ps(odd, (__m512bh)high_row, (__m512bh)_mm512_set1_epi32(pairs[2 * c + 1]));
      }
    }
    const __m512 d = _mm512_loadu_ps(scales + b * 2 * kAmxColumns);
    const __m512 e = _mm512_loadu_ps(scales + b * 2 * kAmxColumns + kAmxColumns);
    for (int r = 0; r < R; ++r) {
      __m512 block = part[r][0];
      for (int i = 1; i < S; ++i) block = _mm512_add_ps(block, part[r][i]);
      acc[r] = _mm512_fmadd_ps(block, d, acc[r]);
      acc[r] = _mm512_fmadd_ps(e, _mm512_set1_ps(sums[r * blocks + b]), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * n),
                        reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(acc[r])));
}

constexpr int64_t kDpbf16Rows = 8;  // rows per pass over a column group's codes

using Dpbf16Fn = void (*)(const bf16_t*, int64_t, const float*, const uint8_t*, const float*,
                          bf16_t*, int64_t);

Dpbf16Fn dpbf16_for(int64_t rows) {
  switch (rows) {
    case 1: return dpbf16_rows<1, 8>;
    case 2: return dpbf16_rows<2, 4>;
    case 3: return dpbf16_rows<3, 2>;
    case 4: return dpbf16_rows<4, 2>;
    case 5: return dpbf16_rows<5, 2>;
    case 6: return dpbf16_rows<6, 2>;
    case 7: return dpbf16_rows<7, 2>;
    default: return dpbf16_rows<8, 2>;
  }
}

at::Tensor q4_linear_dpbf16(const at::Tensor& x, const at::Tensor& codes,
                            const at::Tensor& scales) {
  const TileCall t(x, codes, scales);
  // each thread takes whole column groups, and every row of them: a group's codes
  // (K / 32 x 256 bytes) stay in L1 between its passes of kDpbf16Rows rows
  at::parallel_for(0, t.groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g)
      for (int64_t r0 = 0; r0 < t.rows; r0 += kDpbf16Rows) {
        const int64_t m = std::min(kDpbf16Rows, t.rows - r0);
        dpbf16_for(m)(t.x + r0 * t.k, t.k, t.sums.data() + r0 * t.blocks,
                      t.codes + g * t.blocks * kAmxBlockBytes,
                      t.scales + g * t.blocks * 2 * kAmxColumns, t.o + r0 * t.n + g * kAmxColumns,
                      t.n);
      }
  });
  return t.out;
}
#endif

#if defined(__AVX512BF16__)
// ---------------------------------------------------------------- bf16 GEMM
//
// x [M, K] @ W.T for a bf16 weight packed by pack_bf16_weight, on CPUs with AVX-512 BF16
// but no AMX (Zen 4), where oneDNN's bf16 GEMM is the only other way. A 400-token prefill
// there is ~80% such GEMMs; oneDNN ran them at 89-95% of the two cores' VDPBF16PS peak,
// this at 95-96% on one thread (on two the work splits into equal halves, and there is no
// per-call primitive lookup). The tile: 6 rows x 64 columns in 24 fp32 accumulators, each
// step a pair of input dimensions: 4 loads of the packed weight (64 columns' (w_k, w_k+1)
// pairs), 6 broadcasts of a row's (x_k, x_k+1) pair, 24 VDPBF16PS; K in one pass, pairs
// summed in order of k, each result rounded once to bf16 (RNE), as oneDNN's. oneDNN sums
// in another order for some shapes: a few results in 10^4 differ by one bf16 step.
constexpr int kGemmRows = 6;
constexpr int kGemmVectors = 4;
constexpr int64_t kGemmColumns = kGemmVectors * 16;

template <int R>
void gemm_tile(const bf16_t* x, int64_t k, const __m512i* w, int64_t pairs, bf16_t* out,
               int64_t n) {
  __m512 acc[R][kGemmVectors];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kGemmVectors; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh wv[kGemmVectors];
    for (int v = 0; v < kGemmVectors; ++v)
      wv[v] = (__m512bh)_mm512_loadu_si512(w + p * kGemmVectors + v);
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, x + r * k + 2 * p, sizeof pair);
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(pair);
      for (int v = 0; v < kGemmVectors; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], xv, wv[v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kGemmVectors; ++v)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * n + v * 16),
                          reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(acc[r][v])));
}

using GemmTileFn = void (*)(const bf16_t*, int64_t, const __m512i*, int64_t, bf16_t*, int64_t);

GemmTileFn gemm_tile_for(int64_t rows) {
  switch (rows) {
    case 1: return gemm_tile<1>;
    case 2: return gemm_tile<2>;
    case 3: return gemm_tile<3>;
    case 4: return gemm_tile<4>;
    case 5: return gemm_tile<5>;
    default: return gemm_tile<6>;
  }
}

// W [N, K] -> [N / 64, K / 2, 128]: per 64-column panel and pair of input dimensions, the
// 64 columns' (w_k, w_k+1) pairs, which is VDPBF16PS's operand with lane = column.
at::Tensor pack_bf16_weight(const at::Tensor& w) {
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kBFloat16,
              "pack_bf16_weight takes a 2-d bf16 weight");
  const int64_t n = w.size(0), k = w.size(1);
  TORCH_CHECK(n % kGemmColumns == 0 && k % 2 == 0, "pack_bf16_weight needs N a multiple of ",
              kGemmColumns, " and K even, got ", n, " x ", k);
  return w.view({n / kGemmColumns, kGemmColumns, k / 2, 2}).permute({0, 2, 1, 3}).contiguous()
      .view({n / kGemmColumns, k / 2, 2 * kGemmColumns});
}

// The operands of bf16_linear and bf16_linear_gated, checked: rows of x, K, and the
// packed weight's panels (pairs of input dimensions per panel).
struct GemmOperands {
  int64_t rows, k, pairs, panels, blocks;
  const bf16_t* x;
  const __m512i* w;

  GemmOperands(const at::Tensor& xt, const at::Tensor& packed, const char* name) {
    TORCH_CHECK(xt.dim() == 2 && xt.scalar_type() == at::kBFloat16 && xt.is_contiguous(),
                name, " takes contiguous bf16 rows [M, K]");
    TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kBFloat16 &&
                    packed.is_contiguous() && packed.size(2) == 2 * kGemmColumns,
                name, " takes a weight packed by pack_bf16_weight");
    rows = xt.size(0), k = xt.size(1), pairs = packed.size(1), panels = packed.size(0);
    blocks = (rows + kGemmRows - 1) / kGemmRows;  // of kGemmRows rows
    TORCH_CHECK(k == 2 * pairs, "x has ", k, " columns, the weight ", 2 * pairs);
    x = data_of<bf16_t>(xt);
    w = reinterpret_cast<const __m512i*>(packed.data_ptr());
  }

  // One tile: rows r0.. (up to kGemmRows) times one panel, into out (row stride n).
  void tile(int64_t panel, int64_t r0, bf16_t* out, int64_t n) const {
    gemm_tile_for(std::min<int64_t>(kGemmRows, rows - r0))(
        x + r0 * k, k, w + panel * pairs * kGemmVectors, pairs, out, n);
  }
};

at::Tensor bf16_linear(const at::Tensor& x, const at::Tensor& packed) {
  const GemmOperands g(x, packed, "bf16_linear");
  const int64_t n = g.panels * kGemmColumns;
  at::Tensor out = at::empty({g.rows, n}, x.options());
  bf16_t* os = mutable_data_of<bf16_t>(out);
  // units of work: (panel, 6-row block), panel by panel, split in equal contiguous ranges,
  // so that a thread's consecutive tiles reuse a panel from L1/L2
  at::parallel_for(0, g.panels * g.blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t panel = u / g.blocks, r0 = u % g.blocks * kGemmRows;
      g.tile(panel, r0, os + r0 * n + panel * kGemmColumns, n);
    }
  });
  return out;
}

// SiLU(gate) * up of x @ W.T for a fused gate|up weight packed by pack_bf16_weight: the
// gate's panel j and the up's panel j + panels / 2 computed back to back for one 6-row
// block into a tile-sized buffer, and silu_mul16 applied while both are in L1. The same
// sums, roundings and SiLU as bf16_linear then silu_mul, bit for bit; the [M, N] product
// is never written out and read back (a 405-row prefill's 30 MLPs: ~75 MB each way).
at::Tensor bf16_linear_gated(const at::Tensor& x, const at::Tensor& packed) {
  const GemmOperands g(x, packed, "bf16_linear_gated");
  TORCH_CHECK(g.panels % 2 == 0, "bf16_linear_gated takes a gate|up weight with each half a "
              "whole number of ", kGemmColumns, "-column panels");
  const int64_t half = g.panels / 2, n = half * kGemmColumns;
  at::Tensor out = at::empty({g.rows, n}, x.options());
  bf16_t* os = mutable_data_of<bf16_t>(out);
  at::parallel_for(0, half * g.blocks, 1, [&](int64_t begin, int64_t end) {
    alignas(64) bf16_t gate[kGemmRows * kGemmColumns], up[kGemmRows * kGemmColumns];
    for (int64_t u = begin; u < end; ++u) {
      const int64_t panel = u / g.blocks, r0 = u % g.blocks * kGemmRows;
      g.tile(panel, r0, gate, kGemmColumns);
      g.tile(half + panel, r0, up, kGemmColumns);
      for (int64_t r = 0; r < std::min<int64_t>(kGemmRows, g.rows - r0); ++r)
        for (int64_t c = 0; c < kGemmColumns; c += 16)
          silu_mul16(gate + r * kGemmColumns + c, up + r * kGemmColumns + c,
                     os + (r0 + r) * n + panel * kGemmColumns + c);
    }
  });
  return out;
}
#endif

// ---------------------------------------------------------------- 8-bit weights

// x [M, K] @ W.T for W stored as GGUF's Q8_0 keeps it: int8 codes [N, K] and one fp32 scale
// per 32 columns [N, K / 32]. For the LM head of a small model at decode, where reading the
// weight dominates: half the bytes of bf16, and no bf16 rounding of the weight (the file's
// values exactly). fp32 accumulation; the result in x's dtype.
typedef int8_t vb16 __attribute__((vector_size(16)));

// GCC 12 scalarises __builtin_convertvector from int8 lanes, so the sign extension uses
// the ISA's own instruction where the build has one.
inline vf load16(const int8_t* p) {
#if defined(__AVX512F__)
  const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  vf out;
  std::memcpy(&out, &v, sizeof out);
  return out;
#elif defined(__AVX2__)
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
  const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(bytes, 8)));
  vf out;
  std::memcpy(&out, &lo, 32);
  std::memcpy(reinterpret_cast<char*>(&out) + 32, &hi, 32);
  return out;
#else
  vb16 b;
  std::memcpy(&b, p, sizeof b);
  return __builtin_convertvector(__builtin_convertvector(b, vi), vf);
#endif
}

constexpr int64_t kMaxQ8Rows = 16;

template <typename T>
void q8_linear_impl(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales,
                    at::Tensor& out) {
  const int64_t rows = x.size(0), k = x.size(1), n = codes.size(0), blocks = k / 32;
  std::vector<float> xs(rows * k);
  const T* x_src = data_of<T>(x);
  for (int64_t i = 0; i < rows * k; ++i) xs[i] = load(x_src[i]);
  const int8_t* w = codes.data_ptr<int8_t>();
  const float* d = scales.data_ptr<float>();
  T* o = mutable_data_of<T>(out);
#if !defined(__AVX512F__)
  // Without 16-lane registers the code below spends its time in lane_sum's scalar adds
  // (15 ms for a 49152 x 576 head at one row on a Zen 3, 1.7x the dense fp32 matmul):
  // the 8-lane block dots instead, into fp32, then rounded to T.
  std::vector<float> dots(std::is_same_v<T, float> ? 0 : rows * n);
  float* into = std::is_same_v<T, float> ? reinterpret_cast<float*>(o) : dots.data();
  const RoundedRows rounded = rounded_rows(xs.data(), rows, k);
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    scaled_dots<Q8Codes>(rounded, rows, k, reinterpret_cast<const uint8_t*>(w), d, n, begin, end,
                         into);
  });
  if constexpr (!std::is_same_v<T, float>)
    for (int64_t i = 0; i < rows * n; ++i) store(&o[i], dots[i]);
  return;
#endif
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      vf acc[kMaxQ8Rows];
      for (int64_t m = 0; m < rows; ++m) acc[m] = vf{};
      const int8_t* row = w + j * k;
      for (int64_t b = 0; b < blocks; ++b) {
        const vf w0 = load16(row + b * 32), w1 = load16(row + b * 32 + 16);
        const float scale = d[j * blocks + b];
        for (int64_t m = 0; m < rows; ++m) {
          const float* xm = &xs[m * k + b * 32];
          acc[m] += (w0 * load16(xm) + w1 * load16(xm + 16)) * scale;
        }
      }
      for (int64_t m = 0; m < rows; ++m) store(&o[m * n + j], lane_sum(acc[m]));
    }
  });
}

at::Tensor q8_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be contiguous [rows, in_features]");
  TORCH_CHECK(x.size(0) <= kMaxQ8Rows, "q8_linear takes at most ", kMaxQ8Rows, " rows, got ", x.size(0));
  TORCH_CHECK(codes.scalar_type() == at::kChar && codes.is_contiguous() && codes.dim() == 2 &&
                  codes.size(1) == x.size(1) && x.size(1) % 32 == 0,
              "codes must be contiguous int8 [out_features, in_features], in_features % 32 == 0");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() &&
                  scales.numel() == codes.numel() / 32,
              "scales must be contiguous float32 [out_features, in_features / 32]");
  at::Tensor out = at::empty({x.size(0), codes.size(0)}, x.options());
  if (x.scalar_type() == at::kFloat)
    q8_linear_impl<float>(x, codes, scales, out);
  else if (x.scalar_type() == at::kBFloat16)
    q8_linear_impl<bf16_t>(x, codes, scales, out);
  else
    TORCH_CHECK(false, "q8_linear supports float32 and bfloat16, got ", x.scalar_type());
  return out;
}

// ---------------------------------------------------------------- a whole step

// Every decoder layer of a llama-family model for one engine step, in one call that runs
// without the GIL. At one sequence a 135M model's layer is ~15 small ops; from Python each
// costs a call, argument parsing and a dispatch, about half of the step (30 layers with
// negligible dimensions still took 5.5 ms). Here the same ops run back to back in C++: our
// kernels called directly; each projection through an int4 kernel (ours for fp32 rows;
// for bf16, ours on the tile layout (AMX or AVX-512 BF16), else aten's) when the step has
// at most that projection's measured int4 row limit (as Linear chooses), else through the
// oneDNN-packed bf16 GEMM (mkldnn::_linear_pointwise, as Linear's dense path) or, where
// Linear holds no packed copy (fp32; bf16 on a CPU oneDNN cannot pack for), F.linear's op.
// So the results equal the per-layer Python path's, bit for bit. Attention takes per-row
// tables and lengths (llm/kernels/cpu_attention.py's row_tables_and_lens): decodes and
// prefill rows alike.
// With the GIL released, the server's HTTP loop streams tokens while a step computes.
//
// Per layer, weights are held in this order (LlamaForCausalLM.build_layer_stack):
// input norm; for qkv and o: int4 weight, int4 scales+zeros, dense weight (packed or
// plain); post-attention norm; the same three for gate|up and for down.
constexpr int kTensorsPerLayer = 14;
constexpr int64_t kInt4Group = 32;

at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& packed) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                            c10::string_view, c10::List<c10::optional<at::Scalar>>,
                            c10::optional<c10::string_view>)>();
  return op.call(x, packed, c10::nullopt, "none", c10::List<c10::optional<at::Scalar>>(), "");
}

// RMSNorm of x after x += delta (none when undefined), as RMSNorm.forward and add_forward
// compute it: our kernel in bf16 (the add folded in); in fp32 the add, then torch's
// rms_norm, bit-identical to HF's.
at::Tensor add_norm(const at::Tensor& delta, at::Tensor& x, const at::Tensor& weight, double eps) {
  if (x.scalar_type() == at::kFloat) {
    if (delta.defined()) x.add_(delta);
    return at::rms_norm(x, {x.size(1)}, weight, eps);
  }
  return delta.defined() ? rms_norm(delta, x, weight, eps)[0]
                         : rms_norm(x, c10::nullopt, weight, eps)[0];
}

// SiLU(gate) * up as LlamaMLP computes it: our kernel in bf16; torch's silu and multiply
// in fp32, whose results the HF-identical fp32 tests pin.
at::Tensor gated(const at::Tensor& gate_up) {
  if (gate_up.scalar_type() != at::kFloat) return silu_mul(gate_up);
  const std::vector<at::Tensor> halves = gate_up.chunk(2, -1);
  return at::silu(halves[0]) * halves[1];
}

// x @ W.T through the int4 kernel W was packed for (q4_linear.py's PackedInt4): ours for
// fp32 rows; for bf16 rows, ours on the tile layout (codes [N / 16, K / 32, 256]: AMX's
// where Linux grants it, else AVX-512 BF16's) or aten's.
at::Tensor int4_product(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales) {
  if (x.scalar_type() == at::kFloat) return q4_linear(x, codes, scales);
  if (codes.dim() == 3) {  // the tile layout: AMX where Linux grants it, else AVX-512 BF16
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
    if (amx_granted()) return q4_linear_amx(x, codes, scales);
#endif
#if defined(__AVX512BF16__)
    return q4_linear_dpbf16(x, codes, scales);
#endif
  }
  return at::_weight_int4pack_mm_for_cpu(x, codes, kInt4Group, scales);
}

// x @ W.T through the dense weight as Linear.dense_product holds it: packed for
// bf16_linear (3-d), packed for oneDNN, or plain.
at::Tensor dense_product(const at::Tensor& x, const at::Tensor& weight, bool packed) {
#if defined(__AVX512BF16__)
  if (weight.dim() == 3) return bf16_linear(x, weight);
#endif
  return packed ? packed_linear(x, weight) : at::linear(x, weight);
}

class LayerStack {
 public:
  // int4_rows: per projection kind (qkv, o, gate|up, down), the most rows the int4 kernel
  // takes (Linear.quantised_max_rows). packed: whether the dense weights are prepacked
  // (bf16: for bf16_linear, 3-d, or for oneDNN) or plain (fp32; bf16 where neither packs).
  LayerStack(std::vector<at::Tensor> weights, std::vector<int64_t> int4_rows, bool packed,
             int64_t num_heads, int64_t num_kv_heads, double eps, double scale)
      : weights_(std::move(weights)), int4_rows_(std::move(int4_rows)), packed_(packed),
        num_heads_(num_heads), num_kv_heads_(num_kv_heads), eps_(eps), scale_(scale) {
    TORCH_CHECK(!weights_.empty() && weights_.size() % kTensorsPerLayer == 0,
                "LayerStack takes ", kTensorsPerLayer, " tensors per layer, got ", weights_.size());
    TORCH_CHECK(int4_rows_.size() == 4, "LayerStack takes 4 int4 row limits (qkv, o, gate_up, down)");
  }

  int64_t num_layers() const { return static_cast<int64_t>(weights_.size()) / kTensorsPerLayer; }

  // x [tokens, hidden] (the embeddings; updated in place as the residual stream) -> the
  // residual stream after the last layer, before the final norm. row_tables/row_lens: each
  // token's sequence's block table and its length up to and including that token.
  // keep_rows (int64, optional): the only rows whose output is wanted (those sampled from,
  // possibly none). Every row's K and V are still written, but the last layer's
  // attention, o projection, post-attention norm and MLP run on the kept rows alone, which
  // are all that is returned: a prompt of n tokens skips n - 1 rows of them (about 3% of
  // a 30-layer prefill's work), as the per-layer path does (LlamaDecoderLayer.forward's
  // keep; a kept row attends as a one-query sequence of its own length, there as here).
  at::Tensor run(at::Tensor x, const std::vector<at::Tensor>& k_caches,
                 const std::vector<at::Tensor>& v_caches, const at::Tensor& cos,
                 const at::Tensor& sin_signed, const at::Tensor& slot_mapping,
                 const at::Tensor& row_tables, const at::Tensor& row_lens,
                 const c10::optional<at::Tensor>& keep_rows) const {
    const int64_t layers = num_layers();
    TORCH_CHECK(static_cast<int64_t>(k_caches.size()) == layers &&
                    static_cast<int64_t>(v_caches.size()) == layers,
                "one K and one V cache per layer");
    TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "x must be contiguous [tokens, hidden]");
    if (keep_rows)
      TORCH_CHECK(keep_rows->dim() == 1 && keep_rows->scalar_type() == at::kLong,
                  "keep_rows must be an int64 vector of row indices");
    const int64_t rows = x.size(0);
    bool int4[4];
    for (int i = 0; i < 4; ++i) int4[i] = rows <= int4_rows_[i];
    at::Tensor delta;  // the last MLP output, added to x by the next norm
    for (int64_t l = 0; l < layers; ++l) {
      const at::Tensor* w = &weights_[l * kTensorsPerLayer];
      const auto project = [&](const at::Tensor& in, int kind, const at::Tensor* p) {
        if (int4[kind]) return int4_product(in, p[0], p[1]);
        return dense_product(in, p[2], packed_);
      };
      const auto gate_up_gated = [&](const at::Tensor& in, const at::Tensor* p) {
#if defined(__AVX512BF16__)
        // our GEMM with the SiLU in its epilogue: what project() then gated() would give
        if (!int4[2] && p[2].dim() == 3 && p[2].size(0) % 2 == 0)
          return bf16_linear_gated(in, p[2]);  // (halves of whole panels)
#endif
        return gated(project(in, 2, p));
      };
      at::Tensor normed = add_norm(delta, x, w[0], eps_);
      at::Tensor q = rope_write_kv(project(normed, 0, w + 1), cos, sin_signed, num_heads_,
                                   num_kv_heads_, k_caches[l], v_caches[l], slot_mapping);
      at::Tensor tables = row_tables, lens = row_lens;
      if (keep_rows && l == layers - 1) {
        x = x.index_select(0, *keep_rows);
        if (x.size(0) == 0) return x;  // nothing sampled (a prompt's chunk before its last)
        q = q.index_select(0, *keep_rows);
        tables = row_tables.index_select(0, *keep_rows);
        lens = row_lens.index_select(0, *keep_rows);
        for (int i = 1; i < 4; ++i) int4[i] = x.size(0) <= int4_rows_[i];  // as Linear picks
      }
      at::Tensor attended =
          decode_attention(q, k_caches[l], v_caches[l], tables, lens, scale_, -1, c10::nullopt);
      at::Tensor projected = project(attended.view({x.size(0), -1}), 1, w + 4);
      normed = add_norm(projected, x, w[7], eps_);
      delta = project(gate_up_gated(normed, w + 8), 3, w + 11);
    }
    return x.add_(delta);
  }

 private:
  std::vector<at::Tensor> weights_;
  std::vector<int64_t> int4_rows_;
  bool packed_;
  int64_t num_heads_, num_kv_heads_;
  double eps_, scale_;
};

// The kernels that beat the torch path in this build: all of them with AVX2 (AVX-512
// builds have it too). Compiled for AVX2, the 16-lane code once lost to torch (3.3 vs 1.0
// ms for 16 sequences' attention; SiLU 4.7x torch's time; the 8-bit matmul 1.7x the dense
// one) because GCC turned its selects, shuffles and lane sums into scalar code; vmax/vmin/
// vfloor, the AVX2 transpose_sum and the 8-lane block dots keep it in ymm registers.
std::vector<std::string> fast_kernels() {
#if defined(__AVX2__)
  std::vector<std::string> kernels = {"decode_attention", "rms_norm",  "rope_write_kv", "silu_mul",
                                      "q8_linear",        "q4_linear", "layer_stack"};
#if defined(__AVX512BF16__)
  kernels.push_back("q4_linear_dpbf16");
#endif
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
  // with AMX, oneDNN's bf16 GEMM multiplies in tiles, several times VDPBF16PS's rate
  if (!amx_granted()) kernels.push_back("bf16_linear");
#elif defined(__AVX512BF16__)
  kernels.push_back("bf16_linear");
#endif
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
  if (amx_granted()) kernels.push_back("q4_linear_amx");
  if (amx_granted()) kernels.push_back("attention_tiles_amx");
  if (amx_granted()) kernels.push_back("q8_linear_amx");
#endif
  return kernels;
#else
  return {"rms_norm", "rope_write_kv"};
#endif
}

// The ISA this file was compiled for, so the loader can refuse a build this CPU cannot run.
std::vector<std::string> compiled_isa() {
  std::vector<std::string> isa;
#ifdef __AVX2__
  isa.push_back("avx2");
#endif
#ifdef __FMA__
  isa.push_back("fma");
#endif
#ifdef __AVX512F__
  isa.push_back("avx512f");
#endif
#ifdef __AVX512BW__
  isa.push_back("avx512bw");
#endif
#ifdef __AVX512BF16__
  isa.push_back("avx512_bf16");
#endif
#ifdef __AVX512VL__
  isa.push_back("avx512vl");
#endif
#ifdef __AVX512VNNI__
  isa.push_back("avx512_vnni");
#endif
#ifdef __AVXVNNI__
  isa.push_back("avx_vnni");
#endif
#ifdef __AMX_TILE__
  isa.push_back("amx_tile");
#endif
#ifdef __AMX_BF16__
  isa.push_back("amx_bf16");
#endif
  return isa;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "paged decode attention, one query per sequence");
  m.def("rms_norm", &rms_norm, "RMSNorm with an optional residual add");
  m.def("rope_write_kv", &rope_write_kv, "RoPE of q and k and the write of k and v to the cache");
  m.def("silu_mul", &silu_mul, "SiLU(gate) * up");
  m.def("q8_linear", &q8_linear, "x @ W.T for 8-bit weights with a scale per 32 columns");
  m.def("q4_linear", &q4_linear, "fp32 x @ W.T for GGUF 4-bit blocks (w = d * q + m)");
#if defined(__AVX512BF16__)
  m.def("q4_linear_dpbf16", &q4_linear_dpbf16,
        "bf16 x @ W.T for 4-bit blocks in the AMX tile layout, with AVX-512 BF16");
  m.def("pack_bf16_weight", &pack_bf16_weight, "a bf16 weight [N, K] in bf16_linear's layout");
  m.def("bf16_linear", &bf16_linear, "bf16 x @ W.T for a weight packed by pack_bf16_weight");
  m.def("bf16_linear_gated", &bf16_linear_gated,
        "SiLU(gate) * up of bf16 x @ W.T for a gate|up weight packed by pack_bf16_weight");
#endif
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
  m.def("q4_linear_amx", &q4_linear_amx, "bf16 x @ W.T for 4-bit blocks laid out for AMX tiles");
  m.def("q8_linear_amx", &q8_linear_amx, "bf16 x @ W.T for Q8_0 blocks laid out for AMX tiles");
#endif
  py::class_<LayerStack>(m, "LayerStack")
      .def(py::init<std::vector<at::Tensor>, std::vector<int64_t>, bool, int64_t, int64_t, double,
                    double>(),
           "per-layer weights (14 each), int4 row limits (qkv, o, gate_up, down), whether the "
           "dense weights are oneDNN-packed, num_heads, num_kv_heads, rms eps, attention scale")
      .def("num_layers", &LayerStack::num_layers)
      .def("run", &LayerStack::run, py::call_guard<py::gil_scoped_release>(),
           "all decoder layers for one step; returns the residual stream");
#if defined(__AVX512BF16__)
  m.def("use_amx_attention_tiles", [](bool on) { return amx_tiles_wanted.exchange(on); },
        "whether prefill attention tiles may run on AMX (default true); returns the old value");
#endif
  m.def("fast_kernels", &fast_kernels, "the kernels worth calling in this build");
  m.def("compiled_isa", &compiled_isa, "the ISA extensions this build was compiled for");
}
