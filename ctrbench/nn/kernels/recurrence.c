/* GRU-family recurrences of DIEN, forward and backward, one batch row at a time.
 *
 * h_t = h_{t-1} + g_t * (n_t - h_{t-1}),  n_t = tanh(x_n + r_t * (U_n h_{t-1} + b_hn)),
 * r_t = sigmoid(x_r + U_r h_{t-1} + b_hr); the update weight g_t by mode:
 *   0 GRU             g = 1 - z, z = sigmoid(x_z + U_z h + b_hz)   (torch.nn.GRU, DIEN eq. 3-6)
 *   1 AGRU            g = a_t                                      (DIEN eq. 11; no z rows)
 *   2 AUGRU (paper)   g = a_t * u                                  (DIEN eq. 12-13)
 *   3 AUGRU (official code)  g = 1 - (1 - a_t) * u
 * x = W_i i_t + b_i: gi = W_i i_t is given for all steps (B x T x G*H, gate rows r, z|u, n as
 * torch.nn.GRU) and the bias b_i (G*H, or NULL) is added here, so that the caller's projection is
 * a plain GEMM (a bias folded into it costs a pass over B x T x G*H).
 * Rows run only over their valid steps t < len[b]; states and saved values past them are zero.
 * Rows are independent: rec_forward_all / rec_backward_all run blocks of rows on OpenMP threads
 * (torch's own pool when built with -fopenmp and loaded after torch: same libgomp.so.1), serially
 * when built without OpenMP.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAXG 3
#define MAXH 512

/* out[j] = bias[j] + sum_k v[k] m[k][j]  (m: K x N, row-major; bias may be NULL).
 * Columns go in fixed-width blocks whose accumulators stay in vector registers over the whole
 * k loop (48 wide: 6 independent AVX chains; 32 wide: two k-interleaved sets, 8 chains). */
#define VECMAT_BLOCK(W, KSTEP)                                                                  \
    for (; j0 + W <= N; j0 += W) {                                                              \
        float acc[KSTEP][W];                                                                    \
        for (int i = 0; i < W; ++i) {                                                           \
            acc[0][i] = bias ? bias[j0 + i] : 0.0f;                                             \
            for (int s = 1; s < KSTEP; ++s) acc[s][i] = 0.0f;                                   \
        }                                                                                       \
        int64_t k = 0;                                                                          \
        for (; k + KSTEP <= K; k += KSTEP)                                                      \
            for (int s = 0; s < KSTEP; ++s) {                                                   \
                const float vk = v[k + s];                                                      \
                const float *restrict mk = m + (k + s) * N + j0;                                \
                for (int i = 0; i < W; ++i) acc[s][i] += vk * mk[i];                            \
            }                                                                                   \
        for (; k < K; ++k)                                                                      \
            for (int i = 0; i < W; ++i) acc[0][i] += v[k] * m[k * N + j0 + i];                  \
        for (int i = 0; i < W; ++i) {                                                           \
            float total = acc[0][i];                                                            \
            for (int s = 1; s < KSTEP; ++s) total += acc[s][i];                                 \
            out[j0 + i] = total;                                                                \
        }                                                                                       \
    }

static inline void vecmat(float *restrict out, const float *restrict v, const float *restrict m,
                          const float *restrict bias, int64_t K, int64_t N) {
    int64_t j0 = 0;
    VECMAT_BLOCK(48, 1)
    VECMAT_BLOCK(32, 2)
    VECMAT_BLOCK(8, 4)
    for (; j0 < N; ++j0) {
        float acc = bias ? bias[j0] : 0.0f;
        for (int64_t k = 0; k < K; ++k) acc += v[k] * m[k * N + j0];
        out[j0] = acc;
    }
}

/* in place: v <- sigmoid(v), written with expf only so that the loop vectorizes (libmvec) */
static inline void sigmoid_(float *restrict v, int64_t n) {
    for (int64_t j = 0; j < n; ++j) v[j] = 1.0f / (1.0f + expf(-v[j]));
}

static int rec_forward(const float *gi, const float *b_ih, const float *att, const float *w_t,
                       const float *b_hh, const int64_t *len, int mode, int64_t T, int64_t B,
                       int64_t H, int64_t row0, int64_t row1, float *states, float *r_s, float *u_s, float *n_s, float *ghn_s) {
    /* batch-major arrays (B x T x ...), rows outer and steps inner: all accesses sequential */
    const int64_t G = mode == 1 ? 2 : 3, GH = G * H;
    if (H > MAXH) return -1;
    (void)B;
    float gh[MAXG * MAXH], pre[MAXG * MAXH];
    static const float zeros[MAXG * MAXH];
    const float *restrict bi = b_ih ? b_ih : zeros;
    for (int64_t b = row0; b < row1; ++b) {
        const int64_t steps = len[b] < T ? (len[b] > 0 ? len[b] : 0) : T;
        for (int64_t t = 0; t < steps; ++t) {
            const int64_t o = (b * T + t) * H;
            float *restrict st = states + o, *restrict rs = r_s + o, *restrict us = u_s + o;
            float *restrict ns = n_s + o, *restrict gs = ghn_s + o;
            const float *restrict h = t > 0 ? states + o - H : zeros;
            vecmat(gh, h, w_t, b_hh, H, GH);
            const float *restrict x = gi + (b * T + t) * GH;
            const float *restrict ghn = gh + (G - 1) * H;
            const float a = att ? att[b * T + t] : 0.0f;
            /* r (and z|u): sigmoid of x + gh over the first (G-1)*H rows */
            for (int64_t j = 0; j < (G - 1) * H; ++j) pre[j] = x[j] + bi[j] + gh[j];
            sigmoid_(pre, (G - 1) * H);
            /* n = tanh(x_n + r * ghn) = 2 sigmoid(2 v) - 1 */
            for (int64_t j = 0; j < H; ++j) {
                float v = x[(G - 1) * H + j] + bi[(G - 1) * H + j] + pre[j] * ghn[j];
                ns[j] = 2.0f / (1.0f + expf(-2.0f * v)) - 1.0f;
                rs[j] = pre[j];
                gs[j] = ghn[j];
            }
            const float *restrict u = pre + H;
            if (mode == 1) {
                for (int64_t j = 0; j < H; ++j) st[j] = h[j] + a * (ns[j] - h[j]);
            } else if (mode == 0) {
                for (int64_t j = 0; j < H; ++j) st[j] = ns[j] + u[j] * (h[j] - ns[j]);
            } else if (mode == 2) {
                for (int64_t j = 0; j < H; ++j) st[j] = h[j] + a * u[j] * (ns[j] - h[j]);
            } else {
                for (int64_t j = 0; j < H; ++j) st[j] = ns[j] + (1.0f - a) * u[j] * (h[j] - ns[j]);
            }
            if (G == 3) memcpy(us, u, H * sizeof(float));
        }
        const int64_t rest = (T - steps) * H;
        if (rest > 0) { /* past the row's length: zeros */
            const int64_t o = (b * T + steps) * H;
            memset(states + o, 0, rest * sizeof(float));
            memset(r_s + o, 0, rest * sizeof(float));
            memset(n_s + o, 0, rest * sizeof(float));
            memset(ghn_s + o, 0, rest * sizeof(float));
            if (G == 3) memset(u_s + o, 0, rest * sizeof(float));
        }
    }
    return 0;
}

/* batch-major: d_gi B x T x G*H, d_ghn B x T x H (dL/d(U_n h + b_hn)), d_att B x T or NULL. */
static int rec_backward(const float *grad, const float *att, const float *w, const int64_t *len, int mode,
                 int64_t T, int64_t B, int64_t H, int64_t row0, int64_t row1, const float *states,
                 const float *r_s, const float *u_s, const float *n_s, const float *ghn_s,
                 float *d_gi, float *d_ghn, float *d_att) {
    const int64_t G = mode == 1 ? 2 : 3, GH = G * H;
    if (H > MAXH) return -1;
    (void)B;
    float dh[MAXH], d[MAXH], g[MAXH], dg[MAXH], dgh[MAXG * MAXH], back[MAXH];
    static const float zeros[MAXH];
    for (int64_t b = row0; b < row1; ++b) {
        const int64_t steps = len[b] < T ? (len[b] > 0 ? len[b] : 0) : T;
        if (steps < T) {
            memset(d_gi + (b * T + steps) * GH, 0, (T - steps) * GH * sizeof(float));
            memset(d_ghn + (b * T + steps) * H, 0, (T - steps) * H * sizeof(float));
            if (d_att) memset(d_att + b * T + steps, 0, (T - steps) * sizeof(float));
        }
        for (int64_t j = 0; j < H; ++j) dh[j] = 0.0f;
        for (int64_t t = steps - 1; t >= 0; --t) {
            const int64_t o = (b * T + t) * H;
            float *restrict dx = d_gi + (b * T + t) * GH, *restrict dn_h = d_ghn + o;
            const float *restrict hp = t > 0 ? states + o - H : zeros;
            const float *restrict gr = grad + o, *restrict rs = r_s + o, *restrict us = u_s + o;
            const float *restrict ns = n_s + o, *restrict gs = ghn_s + o;
            const float a = att ? att[b * T + t] : 0.0f;
            for (int64_t j = 0; j < H; ++j) {
                d[j] = dh[j] + gr[j];
                dg[j] = d[j] * (ns[j] - hp[j]); /* dL/dg */
            }
            float *restrict dgate = dgh + H;
            if (mode == 1) {
                for (int64_t j = 0; j < H; ++j) g[j] = a;
            } else if (mode == 0) {
                for (int64_t j = 0; j < H; ++j) {
                    g[j] = 1.0f - us[j];
                    dgate[j] = -dg[j] * us[j] * (1.0f - us[j]);
                }
            } else if (mode == 2) {
                for (int64_t j = 0; j < H; ++j) {
                    g[j] = a * us[j];
                    dgate[j] = dg[j] * a * us[j] * (1.0f - us[j]);
                }
            } else {
                for (int64_t j = 0; j < H; ++j) {
                    g[j] = 1.0f - (1.0f - a) * us[j];
                    dgate[j] = -dg[j] * (1.0f - a) * us[j] * (1.0f - us[j]);
                }
            }
            if (d_att) {
                float da = 0.0f;
                if (mode == 1) {
                    for (int64_t j = 0; j < H; ++j) da += dg[j];
                } else {
                    for (int64_t j = 0; j < H; ++j) da += dg[j] * us[j];
                }
                d_att[b * T + t] = da;
            }
            float *restrict dgn = dgh + (G - 1) * H;
            for (int64_t j = 0; j < H; ++j) {
                float dpre_n = d[j] * g[j] * (1.0f - ns[j] * ns[j]);
                float dpre_r = dpre_n * gs[j] * rs[j] * (1.0f - rs[j]);
                dgh[j] = dpre_r;
                dx[(G - 1) * H + j] = dpre_n;
                dgn[j] = dpre_n * rs[j];
            }
            memcpy(dx, dgh, (G - 1) * H * sizeof(float)); /* r (and z|u) rows: same as dgh */
            memcpy(dn_h, dgn, H * sizeof(float));
            /* dh_{t-1} = d (1 - g) + dgh . W   (W: G*H x H, row-major) */
            vecmat(back, dgh, w, 0, GH, H);
            for (int64_t j = 0; j < H; ++j) dh[j] = d[j] * (1.0f - g[j]) + back[j];
        }
    }
    return 0;
}

/* Blocks of ROWS_PER_TASK rows handed out dynamically (rows differ in length) to `threads` threads. */
#define ROWS_PER_TASK 8

int rec_forward_all(const float *gi, const float *b_ih, const float *att, const float *w_t,
                    const float *b_hh, const int64_t *len, int mode, int64_t T, int64_t B,
                    int64_t H, int threads, float *states, float *r_s, float *u_s, float *n_s, float *ghn_s) {
    const int64_t tasks = (B + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
    int status = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(| : status)
    for (int64_t k = 0; k < tasks; ++k) {
        const int64_t r1 = (k + 1) * ROWS_PER_TASK < B ? (k + 1) * ROWS_PER_TASK : B;
        status |= rec_forward(gi, b_ih, att, w_t, b_hh, len, mode, T, B, H, k * ROWS_PER_TASK, r1, states,
                              r_s, u_s, n_s, ghn_s);
    }
    return status;
}

int rec_backward_all(const float *grad, const float *att, const float *w, const int64_t *len,
                     int mode, int64_t T, int64_t B, int64_t H, int threads, const float *states,
                     const float *r_s, const float *u_s, const float *n_s, const float *ghn_s,
                     float *d_gi, float *d_ghn, float *d_att) {
    const int64_t tasks = (B + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
    int status = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(| : status)
    for (int64_t k = 0; k < tasks; ++k) {
        const int64_t r1 = (k + 1) * ROWS_PER_TASK < B ? (k + 1) * ROWS_PER_TASK : B;
        status |= rec_backward(grad, att, w, len, mode, T, B, H, k * ROWS_PER_TASK, r1, states, r_s,
                               u_s, n_s, ghn_s, d_gi, d_ghn, d_att);
    }
    return status;
}
