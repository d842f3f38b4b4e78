// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// SIMD rows of the fake-quant kernels, compiled for every Highway target and picked at run time.
// A "row" is a contiguous run of n elements whose channel is either fixed (params at index c0)
// or advances with the element (vary: params at c0 + i, channel is the innermost dimension).

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/fake_quant.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "kernels/row_kernels.h"
#include "kernels/scalar_ops.h"

HWY_BEFORE_NAMESPACE();
namespace qi::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The loop every row shares: whole vectors from vf(i), the remainder from the scalar twin sf(i)
// (same bits). With `stream`, full vectors are written with non-temporal stores once the output
// is vector-aligned (large outputs: no read-for-ownership of lines that are overwritten anyway,
// as memcpy does); the driver fences once per chunk.
template <class D, class VecFn, class ScalarFn>
HWY_INLINE void RowLoop(D d, float* HWY_RESTRICT out, int64_t n, bool stream, VecFn vf,
                        ScalarFn sf) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  if (stream) {
    const uintptr_t align = static_cast<uintptr_t>(N) * sizeof(float);
    for (; i < n && reinterpret_cast<uintptr_t>(out + i) % align != 0; ++i) out[i] = sf(i);
    for (; i + N <= n; i += N) hn::Stream(vf(i), d, out + i);
  } else {
    for (; i + N <= n; i += N) hn::StoreU(vf(i), d, out + i);
  }
  for (; i < n; ++i) out[i] = sf(i);
}

// The clamp min(hi, max(lo, v)) that lets a NaN v through. x86's min/max instructions return
// their second operand when either is NaN, so with v second a NaN passes unchanged at no cost;
// Highway's Min/Max order their operands per target, so other targets clamp plainly and
// KeepNaN (below) puts the NaN back with a blend.
#if HWY_ARCH_X86 && HWY_TARGET != HWY_EMU128 && HWY_TARGET != HWY_SCALAR
constexpr bool kClampPassesNaN = true;
template <size_t N>
HWY_INLINE hn::Vec128<float, N> ClampPassingNaN(hn::Vec128<float, N> v, hn::Vec128<float, N> lo,
                                                hn::Vec128<float, N> hi) {
  return hn::Vec128<float, N>{_mm_min_ps(hi.raw, _mm_max_ps(lo.raw, v.raw))};
}
#if HWY_MAX_BYTES >= 32
HWY_INLINE hn::Vec256<float> ClampPassingNaN(hn::Vec256<float> v, hn::Vec256<float> lo,
                                             hn::Vec256<float> hi) {
  return hn::Vec256<float>{_mm256_min_ps(hi.raw, _mm256_max_ps(lo.raw, v.raw))};
}
#endif
#if HWY_MAX_BYTES >= 64
HWY_INLINE hn::Vec512<float> ClampPassingNaN(hn::Vec512<float> v, hn::Vec512<float> lo,
                                             hn::Vec512<float> hi) {
  return hn::Vec512<float>{_mm512_min_ps(hi.raw, _mm512_max_ps(lo.raw, v.raw))};
}
#endif
#else
constexpr bool kClampPassesNaN = false;
template <class V>
HWY_INLINE V ClampPassingNaN(V v, V lo, V hi) {
  return hn::Min(hn::Max(v, lo), hi);
}
#endif

// y, where y was computed from x by arithmetic after ClampPassingNaN: a NaN x comes out of that
// arithmetic as x made quiet (same sign and payload), as the scalar twins return it; targets
// whose clamp loses the NaN blend it back.
template <class D, class V>
HWY_INLINE V KeepNaN(D d, V x, V y) {
  if constexpr (kClampPassesNaN) {
    return y;
  } else {
    const hn::RebindToUnsigned<D> du;
    const V quiet = hn::Or(x, hn::BitCast(d, hn::Set(du, scalar::kQuietNaNBit)));
    return hn::IfThenElse(hn::IsNaN(x), quiet, y);
  }
}

// Rounding to nearest even by adding and subtracting 1.5 * 2^23: exact for |c| <= 2^22.
constexpr float kRoundMagic = 12582912.0f;

// ATen: q = clamp(zp + nearbyint(x * inv), qmin, qmax), y = (q - zp) * scale. The same bits as
// y = r * scale with r = nearbyint(clamp(x * inv, qmin - zp, qmax - zp)): the bounds are
// integers, so clamping before rounding changes nothing, and q - zp is exact. Rounding to
// nearest even is (c + kRoundMagic) - kRoundMagic (here |c| <= 2^17) and gives +0 for a zero as
// zp + nearbyint(...) does. Six operations instead of eight, no round instruction; a NaN x
// passes the clamp and comes out quiet (KeepNaN).
template <class D, class V>
HWY_INLINE V AffineTorchVec(D d, V x, V scale, V inv, V lo, V hi) {
  const V magic = hn::Set(d, kRoundMagic);
  const V c = ClampPassingNaN(hn::Mul(x, inv), lo, hi);
  return KeepNaN(d, x, hn::Mul(hn::Sub(hn::Add(c, magic), magic), scale));
}

// The same for a power-of-two scale s (inv exactly 1 / s), in x's own units: x * inv and r * s
// only move the exponent, so y = (clamp(x, lo * s, hi * s) + m) - m with m = kRoundMagic * s,
// whose float32 spacing is s over the clamped range: the sum rounds to a multiple of s, half to
// even, as nearbyint does in grid units. Four operations and no multiply, the same bits (an x
// so small that x * inv underflows gives +0 both ways). lo_s, hi_s, m: PotScaleConstants.
template <class D, class V>
HWY_INLINE V AffinePotVec(D d, V x, V lo_s, V hi_s, V m) {
  return KeepNaN(d, x, hn::Sub(hn::Add(ClampPassingNaN(x, lo_s, hi_s), m), m));
}

// lo * s, hi * s and kRoundMagic * s (all exact) when s is a power of two with inv == 1 / s and
// the constants are normal floats; false otherwise.
HWY_INLINE bool PotScaleConstants(float s, float inv, float lo, float hi, float* lo_s,
                                  float* hi_s, float* m) {
  int e = 0;
  if (!(std::frexp(s, &e) == 0.5f) || inv * s != 1.f) return false;
  *m = kRoundMagic * s;
  *lo_s = lo * s;
  *hi_s = hi * s;
  return std::isnormal(*m);
}

void AffineTorchRow(const float* HWY_RESTRICT in, float* out, int64_t n,
                    const AffineTorchPlan& p, int64_t c0, bool vary, bool stream) {
  const hn::ScalableTag<float> d;
  const auto qmin = hn::Set(d, p.qmin), qmax = hn::Set(d, p.qmax);
  if (!vary) {
    const float s0 = p.scale[c0], inv0 = p.inv_scale[c0];
    const float lo0 = p.qmin - p.zero_point[c0], hi0 = p.qmax - p.zero_point[c0];
    auto tail = [&](int64_t i) {
      return scalar::affine_torch(in[i], s0, inv0, p.zero_point[c0], p.qmin, p.qmax);
    };
    float lo_s = 0.f, hi_s = 0.f, m = 0.f;
    if (PotScaleConstants(s0, inv0, lo0, hi0, &lo_s, &hi_s, &m)) {
      const auto vlo = hn::Set(d, lo_s), vhi = hn::Set(d, hi_s), vm = hn::Set(d, m);
      RowLoop(
          d, out, n, stream,
          [&](int64_t i) { return AffinePotVec(d, hn::LoadU(d, in + i), vlo, vhi, vm); }, tail);
      return;
    }
    const auto scale = hn::Set(d, s0), inv = hn::Set(d, inv0);
    const auto lo = hn::Set(d, lo0), hi = hn::Set(d, hi0);
    RowLoop(
        d, out, n, stream,
        [&](int64_t i) { return AffineTorchVec(d, hn::LoadU(d, in + i), scale, inv, lo, hi); },
        tail);
    return;
  }
  const float* s = p.scale.data() + c0;
  const float* v = p.inv_scale.data() + c0;
  const float* z = p.zero_point.data() + c0;
  RowLoop(
      d, out, n, stream,
      [&](int64_t i) {
        const auto zp = hn::LoadU(d, z + i);
        return AffineTorchVec(d, hn::LoadU(d, in + i), hn::LoadU(d, s + i), hn::LoadU(d, v + i),
                              hn::Sub(qmin, zp), hn::Sub(qmax, zp));
      },
      [&](int64_t i) { return scalar::affine_torch(in[i], s[i], v[i], z[i], p.qmin, p.qmax); });
}

template <class D, class V>
HWY_INLINE V AffineTfVec(D d, V x, V scale, V inv, V nmin, V nmax, V qz, V half, bool use_div) {
  // TF: inputs.cwiseMin(nudged_max).cwiseMax(nudged_min) - nudged_min, then floor(v - qz + 0.5).
  // The order of the clamp's min and max does not matter: nudged_min < nudged_max.
  const V c = hn::Sub(ClampPassingNaN(x, nmin, nmax), nmin);
  const V v = use_div ? hn::Div(c, scale) : hn::Mul(c, inv);
  return KeepNaN(d, x, hn::Mul(hn::Floor(hn::Add(hn::Sub(v, qz), half)), scale));
}

void AffineTfRow(const float* HWY_RESTRICT in, float* out, int64_t n, const AffineTfPlan& p,
                 int64_t c0, bool vary, bool stream) {
  const hn::ScalableTag<float> d;
  const auto half = hn::Set(d, 0.5f);
  const bool div = p.use_division;
  if (!vary) {
    const auto scale = hn::Set(d, p.scale[c0]), inv = hn::Set(d, p.inv_scale[c0]);
    const auto nmin = hn::Set(d, p.nudged_min[c0]), nmax = hn::Set(d, p.nudged_max[c0]);
    const auto qz = hn::Set(d, p.quant_zero[c0]);
    RowLoop(
        d, out, n, stream,
        [&](int64_t i) {
          return AffineTfVec(d, hn::LoadU(d, in + i), scale, inv, nmin, nmax, qz, half, div);
        },
        [&](int64_t i) {
          return scalar::affine_tf(in[i], p.scale[c0], p.inv_scale[c0], p.nudged_min[c0],
                                   p.nudged_max[c0], p.quant_zero[c0], div);
        });
    return;
  }
  const float* s = p.scale.data() + c0;
  const float* v = p.inv_scale.data() + c0;
  const float* lo = p.nudged_min.data() + c0;
  const float* hi = p.nudged_max.data() + c0;
  const float* qz = p.quant_zero.data() + c0;
  RowLoop(
      d, out, n, stream,
      [&](int64_t i) {
        return AffineTfVec(d, hn::LoadU(d, in + i), hn::LoadU(d, s + i), hn::LoadU(d, v + i),
                           hn::LoadU(d, lo + i), hn::LoadU(d, hi + i), hn::LoadU(d, qz + i), half,
                           div);
      },
      [&](int64_t i) { return scalar::affine_tf(in[i], s[i], v[i], lo[i], hi[i], qz[i], div); });
}

void LutRow(const float* HWY_RESTRICT in, float* out, int64_t n, const LutPlan& p, int64_t c0,
            bool vary, bool stream) {
  const hn::ScalableTag<float> d;
  const hn::RebindToSigned<decltype(d)> di;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const size_t B = p.boundaries.size();
  const int32_t M = static_cast<int32_t>(B + 1);  // distinct LUT values
  const auto mult = hn::Set(d, p.multiplier), lo = hn::Set(d, p.lo), hi = hn::Set(d, p.hi);
  const float* bounds = p.boundaries.data();
  auto scalar_at = [&](int64_t i) {
    const int64_t c = vary ? c0 + i : c0;
    if (std::isnan(in[i])) return in[i];
    const float v = scalar::lut_value(in[i], p.divisor[c], p.multiplier, p.lo, p.hi);
    return p.table[static_cast<size_t>(c) * M + scalar::lut_step(v, bounds, B)];
  };
  // The clamped, scaled input (no rounding before the nearest search, docs/numerics.md;
  // division, not reciprocal).
  auto clamped = [&](const auto s) { return hn::Min(hn::Max(hn::Mul(s, mult), lo), hi); };
  const auto div0 = hn::Set(d, vary ? 1.f : p.divisor[c0]);
  auto fixed_v = [&](const auto x) { return clamped(hn::Div(x, div0)); };
  // k = number of boundaries <= v, by a scan (a true mask is -1).
  auto count_le = [&](const auto v) {
    auto k = hn::Zero(di);
    for (size_t j = 0; j < B; ++j)
      k = hn::Sub(k, hn::VecFromMask(di, hn::RebindMask(di, hn::Ge(v, hn::Set(d, bounds[j])))));
    return k;
  };
  constexpr size_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);
  if (!vary && M <= N) {
    // All distinct values fit one vector: binary search over the boundaries and the output
    // through in-register table lookups instead of a scan and a gather.
    HWY_ALIGN float bt[kMaxLanes], tt[kMaxLanes];
    for (int64_t j = 0; j < N; ++j) {
      bt[j] = j < static_cast<int64_t>(B) ? bounds[j] : std::numeric_limits<float>::infinity();
      tt[j] = j < M ? p.table[static_cast<size_t>(c0) * M + j] : 0.f;
    }
    const auto bvec = hn::Load(d, bt), tvec = hn::Load(d, tt);
    int32_t top = 1;
    while (top < M) top *= 2;
    RowLoop(
        d, out, n, stream,
        [&](int64_t i) {
          const auto x = hn::LoadU(d, in + i);
          const auto v = fixed_v(x);
          auto k = hn::Zero(di);  // k = number of boundaries <= v
          for (int32_t step = top / 2; step >= 1; step /= 2) {
            const auto cand = hn::Add(k, hn::Set(di, step));
            const auto b =
                hn::TableLookupLanes(bvec, hn::IndicesFromVec(d, hn::Sub(cand, hn::Set(di, 1))));
            k = hn::IfThenElse(hn::RebindMask(di, hn::Ge(v, b)), cand, k);
          }
          const auto y = hn::TableLookupLanes(tvec, hn::IndicesFromVec(d, k));
          return hn::IfThenElse(hn::IsNaN(x), x, y);
        },
        scalar_at);
    return;
  }
  if (!vary && M <= 2 * N) {
    // Two vectors of values (16 with AVX2, 4-bit LUTs): one compare with the middle boundary
    // bounds[N-1] picks each lane's half, a scan of that half's N-1 boundaries counts within it
    // (the lower half's bounds[N-1] > v; the upper half pads with +inf), and the value comes
    // from an in-register lookup per half and a blend instead of a gather (slow on many x86
    // cores). Boundaries ascend, so the count is the full scan's.
    HWY_ALIGN float b_lo[kMaxLanes], b_hi[kMaxLanes], t_lo[kMaxLanes], t_hi[kMaxLanes];
    const float* table = p.table.data() + static_cast<size_t>(c0) * M;
    for (int64_t j = 0; j < N; ++j) {
      b_lo[j] = bounds[j];  // B >= N here
      b_hi[j] = N + j < static_cast<int64_t>(B) ? bounds[N + j]
                                                : std::numeric_limits<float>::infinity();
      t_lo[j] = table[j];
      t_hi[j] = N + j < M ? table[N + j] : 0.f;
    }
    const auto tlo = hn::Load(d, t_lo), thi = hn::Load(d, t_hi);
    const auto middle = hn::Set(d, bounds[N - 1]);
    RowLoop(
        d, out, n, stream,
        [&](int64_t i) {
          const auto x = hn::LoadU(d, in + i);
          const auto v = fixed_v(x);
          const auto upper = hn::Ge(v, middle);
          auto k = hn::Zero(di);  // boundaries <= v within the half
          for (int64_t j = 0; j + 1 < N; ++j) {
            const auto b = hn::IfThenElse(upper, hn::Set(d, b_hi[j]), hn::Set(d, b_lo[j]));
            k = hn::Sub(k, hn::VecFromMask(di, hn::RebindMask(di, hn::Ge(v, b))));
          }
          const auto at = hn::IndicesFromVec(d, k);
          const auto y =
              hn::IfThenElse(upper, hn::TableLookupLanes(thi, at), hn::TableLookupLanes(tlo, at));
          return hn::IfThenElse(hn::IsNaN(x), x, y);
        },
        scalar_at);
    return;
  }
  RowLoop(
      d, out, n, stream,
      [&](int64_t i) {
        const auto x = hn::LoadU(d, in + i);
        const auto v = vary ? clamped(hn::Div(x, hn::LoadU(d, p.divisor.data() + c0 + i)))
                            : fixed_v(x);
        const auto ch = vary ? hn::Iota(di, static_cast<int32_t>(c0 + i))
                             : hn::Set(di, static_cast<int32_t>(c0));
        const auto idx = hn::Add(hn::Mul(ch, hn::Set(di, M)), count_le(v));
        const auto y = hn::GatherIndex(d, p.table.data(), idx);
        return hn::IfThenElse(hn::IsNaN(x), x, y);
      },
      scalar_at);
}

// scalar::float_format_round lane by lane: v (clamped) rounded by adding and subtracting
// M = 2^(E - mbits + 23) with E the exponent of |v| (at least the format's emin).
template <class D, class V>
HWY_INLINE V FormatRoundVec(D d, V v, int32_t mbits, int32_t emin_biased) {
  const hn::RebindToSigned<D> di;
  const V a = hn::Abs(v);
  const auto e = hn::Max(hn::ShiftRight<23>(hn::BitCast(di, a)), hn::Set(di, emin_biased));
  const V m = hn::BitCast(d, hn::ShiftLeft<23>(hn::Add(e, hn::Set(di, 23 - mbits))));
  return hn::CopySign(hn::Sub(hn::Add(a, m), m), v);
}

// scalar::float_quant lane by lane: clamp(x / divisor), rounded, times the multiplier.
template <class D, class V>
HWY_INLINE V FloatVec(D d, V x, V divisor, V multiplier, V max, int32_t mbits,
                      int32_t emin_biased) {
  const V v = hn::Min(hn::Max(hn::Div(x, divisor), hn::Neg(max)), max);
  return hn::IfThenElse(hn::IsNaN(x), x,
                        hn::Mul(FormatRoundVec(d, v, mbits, emin_biased), multiplier));
}

void FloatRow(const float* HWY_RESTRICT in, float* out, int64_t n, const FloatPlan& p, int64_t c0,
              bool vary, bool stream) {
  const hn::ScalableTag<float> d;
  const auto max = hn::Set(d, p.max);
  const int32_t mbits = p.mbits;
  const int32_t emin = scalar::float_format_emin_biased(p.ebits);
  const float* s = p.scale.data() + c0;
  if (!vary) {
    const auto scale = hn::Set(d, s[0]);
    RowLoop(
        d, out, n, stream,
        [&](int64_t i) {
          return FloatVec(d, hn::LoadU(d, in + i), scale, scale, max, mbits, emin);
        },
        [&](int64_t i) { return scalar::float_quant(in[i], s[0], s[0], p.max, mbits, emin); });
    return;
  }
  RowLoop(
      d, out, n, stream,
      [&](int64_t i) {
        const auto scale = hn::LoadU(d, s + i);
        return FloatVec(d, hn::LoadU(d, in + i), scale, scale, max, mbits, emin);
      },
      [&](int64_t i) { return scalar::float_quant(in[i], s[i], s[i], p.max, mbits, emin); });
}

// The largest |x| of n contiguous floats; *nan tells whether one of them is NaN (Max's NaN
// handling differs between targets, so NaN is tracked on its own).
float BlockAmax(const float* HWY_RESTRICT in, int64_t n, bool* nan) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto amax = hn::Zero(d);
  auto nans = hn::Zero(d);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto x = hn::LoadU(d, in + i);
    amax = hn::Max(amax, hn::Abs(x));
    nans = hn::Or(nans, hn::VecFromMask(d, hn::IsNaN(x)));
  }
  float m = hn::GetLane(hn::MaxOfLanes(d, amax));
  bool any = !hn::AllFalse(d, hn::MaskFromVec(nans));
  for (; i < n; ++i) {
    any = any || std::isnan(in[i]);
    m = std::fmax(m, std::fabs(in[i]));
  }
  *nan = any;
  return m;
}

// A block-scaled plan's element format (MX: the plan's; NVFP4: E2M1) and MX's pre-scale
// (0: none).
struct BlockFormat {
  int32_t mbits, emin;
  float max, pre;
};
template <typename PlanT>
BlockFormat BlockFormatOf(const PlanT& p) {
  if constexpr (std::is_same_v<PlanT, MxPlan>)
    return {p.mbits, scalar::float_format_emin_biased(p.ebits), p.max, p.tensor_scale};
  else
    return {1, scalar::float_format_emin_biased(2), 6.f, 0.f};
}

// The scales of the k elements at x, one block (MX: divisor and multiplier; NVFP4: the total
// scale for both) from its largest magnitude; false when the block holds a NaN (or MX's scale
// is E8M0's NaN). MX's pre-scale p divides each element (float32, so u = x / p is what the
// block sees: max |u| is amax / p rounded, division being monotone).
template <typename PlanT>
HWY_INLINE bool BlockScales(const float* HWY_RESTRICT x, int64_t k, const PlanT& p, float pre,
                            float* divisor, float* multiplier) {
  bool nan = false;
  const float amax = BlockAmax(x, k, &nan);
  if (nan) return false;
  if constexpr (std::is_same_v<PlanT, MxPlan>) {
    return scalar::mx_scales(pre > 0 ? amax / pre : amax, p.emax, divisor, multiplier);
  } else {
    *divisor = *multiplier = scalar::nvfp4_total_scale(amax, p.tensor_scale);
    return true;
  }
}

// n contiguous elements (whole blocks of the plan's block size) of a block-scaled plan: per
// block, its scales (BlockScales), then FloatVec with them. MX's pre-scale p divides each element
// and multiplies the result, two roundings as the reference makes them.
template <typename PlanT>
void BlockRow(const float* HWY_RESTRICT in, float* HWY_RESTRICT out, int64_t n, const PlanT& p) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t k = p.groups.group_size;
  const BlockFormat f = BlockFormatOf(p);
  const int32_t mbits = f.mbits, emin = f.emin;
  const float max = f.max, pre = f.pre;
  const auto vmax = hn::Set(d, max);
  const auto vpre = hn::Set(d, pre);
  for (int64_t b = 0; b + k <= n; b += k) {
    float divisor = 0.f, multiplier = 0.f;
    if (!BlockScales(in + b, k, p, pre, &divisor, &multiplier)) {
      std::fill(out + b, out + b + k, std::numeric_limits<float>::quiet_NaN());
      continue;
    }
    const auto vd = hn::Set(d, divisor), vm = hn::Set(d, multiplier);
    int64_t i = 0;
    if (pre > 0) {
      for (; i + N <= k; i += N) {
        const auto u = hn::Div(hn::LoadU(d, in + b + i), vpre);
        hn::StoreU(hn::Mul(FloatVec(d, u, vd, vm, vmax, mbits, emin), vpre), d, out + b + i);
      }
      for (; i < k; ++i)
        out[b + i] =
            scalar::mx_prescaled_quant(in[b + i], pre, divisor, multiplier, max, mbits, emin);
      continue;
    }
    for (; i + N <= k; i += N)
      hn::StoreU(FloatVec(d, hn::LoadU(d, in + b + i), vd, vm, vmax, mbits, emin), d, out + b + i);
    for (; i < k; ++i)
      out[b + i] = scalar::float_quant(in[b + i], divisor, multiplier, max, mbits, emin);
  }
}

void MxRow(const float* HWY_RESTRICT in, float* out, int64_t n, const MxPlan& p) {
  BlockRow(in, out, n, p);
}
void Nvfp4Row(const float* HWY_RESTRICT in, float* out, int64_t n, const Nvfp4Plan& p) {
  BlockRow(in, out, n, p);
}

// Fused backward of the affine fake quantizer over a row of one channel (trainable_math.h):
// dx (skipped when null) and the row's sums of dy * dq/dscale and dy * dq/da, accumulated in
// float vectors and flushed to double every kFlush vectors so long rows keep their precision.
void AffineBackwardRow(const float* HWY_RESTRICT x, const float* HWY_RESTRICT dy,
                       float* HWY_RESTRICT dx, int64_t n, const AffineTorchPlan& p, int64_t c,
                       bool lsq, double* d_scale, double* d_offset) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  constexpr int64_t kFlush = 64;
  const auto inv = hn::Set(d, p.inv_scale[c]), zp = hn::Set(d, p.zero_point[c]);
  const auto qmin = hn::Set(d, p.qmin), qmax = hn::Set(d, p.qmax);
  double sum_s = 0, sum_o = 0;
  int64_t i = 0;
  while (i + N <= n) {
    auto acc_s = hn::Zero(d), acc_o = hn::Zero(d);
    for (int64_t k = 0; k < kFlush && i + N <= n; ++k, i += N) {
      const auto g = hn::LoadU(d, dy + i);
      const auto u = hn::Mul(hn::LoadU(d, x + i), inv);
      const auto r = hn::Round(u);
      const auto q = hn::Add(r, zp);
      const auto inside = hn::And(hn::Ge(q, qmin), hn::Le(q, qmax));
      const auto cl = hn::Min(hn::Max(q, qmin), qmax);
      if (lsq) {
        const auto nan = hn::IsNaN(u);
        acc_s = hn::Add(acc_s, hn::Mul(g, hn::IfThenElse(inside, hn::Sub(r, u),
                                                         hn::IfThenElse(nan, u, cl))));
        acc_o = hn::Add(acc_o, hn::IfThenElse(nan, u, hn::IfThenZeroElse(inside, g)));
        if (dx) hn::StoreU(hn::IfThenElseZero(inside, g), d, dx + i);
      } else {
        acc_s = hn::Add(acc_s, hn::Mul(g, hn::Sub(hn::Sub(cl, zp), u)));
        if (dx) hn::StoreU(g, d, dx + i);
      }
    }
    sum_s += hn::GetLane(hn::SumOfLanes(d, acc_s));
    sum_o += hn::GetLane(hn::SumOfLanes(d, acc_o));
  }
  for (; i < n; ++i)
    affine_backward_one(x[i], dy[i], dx ? dx + i : nullptr, p, c, lsq, &sum_s, &sum_o);
  *d_scale += sum_s;
  *d_offset += sum_o;
}

// The formats' backward over n contiguous elements of one scale (trainable_math.cc): with
// u = (x / pre, when pre > 0) / divisor and q = F(clamp(u, -max, max)), writes dx (unless null)
// = dy (STE) or dy inside [-max, max] and 0 outside (LSQ), and returns the sum of
// dy * dq/dE in element units: q - u (STE; LSQ inside) and q (LSQ outside; NaN for a NaN u).
// Each term is g * (a - b) of float32 a and b, computed in float64 (exactly: float32 operands),
// and summed in float64 lanes (then across them), as the scalar path does in order.
HWY_INLINE double FormatBackward(const float* HWY_RESTRICT x, const float* HWY_RESTRICT dy,
                                 float* HWY_RESTRICT dx, int64_t n, float pre, float divisor,
                                 float max, int32_t mbits, int32_t emin, bool lsq) {
  double sum = 0;
  int64_t i = 0;
#if HWY_HAVE_FLOAT64 && HWY_TARGET != HWY_SCALAR  // one-lane targets: the loop below
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto vmax = hn::Set(d, max), vdiv = hn::Set(d, divisor), vpre = hn::Set(d, pre);
  const hn::Repartition<double, decltype(d)> dd;
  const hn::Half<decltype(d)> dh;
  auto acc = hn::Zero(dd);
  const auto add = [&](auto g, auto a, auto b) {  // acc += g * (a - b) in float64, both halves
    // Mul then Add (no fused multiply-add): the same bits on targets with and without FMA.
    acc = hn::Add(acc, hn::Mul(hn::PromoteTo(dd, hn::LowerHalf(dh, g)),
                               hn::Sub(hn::PromoteTo(dd, hn::LowerHalf(dh, a)),
                                       hn::PromoteTo(dd, hn::LowerHalf(dh, b)))));
    acc = hn::Add(acc, hn::Mul(hn::PromoteTo(dd, hn::UpperHalf(dh, g)),
                               hn::Sub(hn::PromoteTo(dd, hn::UpperHalf(dh, a)),
                                       hn::PromoteTo(dd, hn::UpperHalf(dh, b)))));
  };
  for (; i + N <= n; i += N) {
    auto xv = hn::LoadU(d, x + i);
    if (pre > 0) xv = hn::Div(xv, vpre);
    const auto u = hn::Div(xv, vdiv);
    const auto g = hn::LoadU(d, dy + i);
    const auto q = FormatRoundVec(d, hn::Min(hn::Max(u, hn::Neg(vmax)), vmax), mbits, emin);
    if (lsq) {
      const auto inside = hn::Le(hn::Abs(u), vmax);  // false for NaN
      add(g, hn::IfThenElse(hn::IsNaN(u), u, q), hn::IfThenElseZero(inside, u));
      if (dx) hn::StoreU(hn::IfThenElseZero(inside, g), d, dx + i);
    } else {
      add(g, q, u);
      if (dx) hn::StoreU(g, d, dx + i);
    }
  }
  sum = hn::GetLane(hn::SumOfLanes(dd, acc));
#endif
  for (; i < n; ++i) {
    const float u = (pre > 0 ? x[i] / pre : x[i]) / divisor;
    const float r = format_backward_one(u, dy[i], max, mbits, emin, lsq, &sum);
    if (dx) dx[i] = r;
  }
  return sum;
}

double FormatBackwardRow(const float* HWY_RESTRICT x, const float* HWY_RESTRICT dy,
                         float* HWY_RESTRICT dx, int64_t n, const FloatPlan& p, int64_t c,
                         bool lsq) {
  const float s = p.scale[static_cast<size_t>(c)];
  return FormatBackward(x, dy, dx, n, 0.f, s, p.max, p.mbits,
                        scalar::float_format_emin_biased(p.ebits), lsq);
}

// The same over whole blocks of a data-scaled plan, each with its scales as BlockRow computes
// them; returns the sum of each block's terms times its multiplier (MX's dL/dp in element units).
template <typename PlanT>
double BlockBackward(const float* HWY_RESTRICT x, const float* HWY_RESTRICT dy,
                     float* HWY_RESTRICT dx, int64_t n, const PlanT& p, bool lsq) {
  const int64_t k = p.groups.group_size;
  const BlockFormat f = BlockFormatOf(p);
  double sum = 0;
  for (int64_t b = 0; b + k <= n; b += k) {
    float divisor = 0.f, multiplier = 0.f;
    if (!BlockScales(x + b, k, p, f.pre, &divisor, &multiplier)) {
      // Every element NaN: NaN terms; dx passes (STE) or stops (LSQ).
      sum += std::numeric_limits<double>::quiet_NaN();
      if (dx)
        for (int64_t i = b; i < b + k; ++i) dx[i] = lsq ? 0.f : dy[i];
      continue;
    }
    sum += static_cast<double>(multiplier) *
           FormatBackward(x + b, dy + b, dx ? dx + b : nullptr, k, f.pre, divisor, f.max, f.mbits,
                          f.emin, lsq);
  }
  return sum;
}

double MxBackwardRow(const float* HWY_RESTRICT x, const float* HWY_RESTRICT dy,
                     float* HWY_RESTRICT dx, int64_t n, const MxPlan& p, bool lsq) {
  return BlockBackward(x, dy, dx, n, p, lsq);
}
double Nvfp4BackwardRow(const float* HWY_RESTRICT x, const float* HWY_RESTRICT dy,
                        float* HWY_RESTRICT dx, int64_t n, const Nvfp4Plan& p, bool lsq) {
  return BlockBackward(x, dy, dx, n, p, lsq);
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace qi::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qi::kernels {

HWY_EXPORT(AffineTorchRow);
HWY_EXPORT(AffineTfRow);
HWY_EXPORT(LutRow);
HWY_EXPORT(FloatRow);
HWY_EXPORT(MxRow);
HWY_EXPORT(Nvfp4Row);
HWY_EXPORT(TargetName);
HWY_EXPORT(AffineBackwardRow);
HWY_EXPORT(FormatBackwardRow);
HWY_EXPORT(MxBackwardRow);
HWY_EXPORT(Nvfp4BackwardRow);

double format_backward_row(const float* x, const float* dy, float* dx, int64_t n,
                           const FloatPlan& p, int64_t c, bool lsq) {
  return HWY_DYNAMIC_DISPATCH(FormatBackwardRow)(x, dy, dx, n, p, c, lsq);
}
double mx_backward_row(const float* x, const float* dy, float* dx, int64_t n, const MxPlan& p,
                       bool lsq) {
  return HWY_DYNAMIC_DISPATCH(MxBackwardRow)(x, dy, dx, n, p, lsq);
}
double nvfp4_backward_row(const float* x, const float* dy, float* dx, int64_t n,
                          const Nvfp4Plan& p, bool lsq) {
  return HWY_DYNAMIC_DISPATCH(Nvfp4BackwardRow)(x, dy, dx, n, p, lsq);
}

void affine_backward_row(const float* x, const float* dy, float* dx, int64_t n,
                         const AffineTorchPlan& p, int64_t c, bool lsq, double* d_scale,
                         double* d_offset) {
  HWY_DYNAMIC_DISPATCH(AffineBackwardRow)(x, dy, dx, n, p, c, lsq, d_scale, d_offset);
}

void affine_torch_row(const float* in, float* out, int64_t n, const AffineTorchPlan& p,
                      int64_t c0, bool vary, bool stream) {
  HWY_DYNAMIC_DISPATCH(AffineTorchRow)(in, out, n, p, c0, vary, stream);
}
void affine_tf_row(const float* in, float* out, int64_t n, const AffineTfPlan& p, int64_t c0,
                   bool vary, bool stream) {
  HWY_DYNAMIC_DISPATCH(AffineTfRow)(in, out, n, p, c0, vary, stream);
}
void lut_row(const float* in, float* out, int64_t n, const LutPlan& p, int64_t c0, bool vary,
             bool stream) {
  HWY_DYNAMIC_DISPATCH(LutRow)(in, out, n, p, c0, vary, stream);
}

void float_row(const float* in, float* out, int64_t n, const FloatPlan& p, int64_t c0, bool vary,
               bool stream) {
  HWY_DYNAMIC_DISPATCH(FloatRow)(in, out, n, p, c0, vary, stream);
}

void mx_row(const float* in, float* out, int64_t n, const MxPlan& p) {
  HWY_DYNAMIC_DISPATCH(MxRow)(in, out, n, p);
}
void nvfp4_row(const float* in, float* out, int64_t n, const Nvfp4Plan& p) {
  HWY_DYNAMIC_DISPATCH(Nvfp4Row)(in, out, n, p);
}

std::string simd_target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

std::vector<std::string> supported_simd_targets() {
  std::vector<std::string> names;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) names.emplace_back(hwy::TargetName(t));
  return names;
}

void force_simd_target(const std::string& name) {
  if (name.empty()) {
    hwy::SetSupportedTargetsForTest(0);
  } else {
    hwy::SetSupportedTargetsForTest(0);
    int64_t found = 0;
    for (int64_t t : hwy::SupportedAndGeneratedTargets())
      if (name == hwy::TargetName(t)) found = t;
    if (found == 0) {
      std::string all;
      for (const auto& s : supported_simd_targets()) all += (all.empty() ? "" : ", ") + s;
      throw Error(str_cat("force_simd_target: target \"", name,
                          "\" is not compiled in or not supported here; available: ", all));
    }
    hwy::SetSupportedTargetsForTest(found);
  }
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

}  // namespace qi::kernels
#endif  // HWY_ONCE
