import Foundation
import VoxCodec
import VoxCore

/// The float LSTM used for training: the same architecture as the codec's fixed-point one
/// (gates i, f, g, o; W of 4H rows by K = I + H columns; linear output), trained with
/// BLAS and quantised afterwards (`quantised(...)`).
public struct FloatParams: Sendable {
    public var H: Int, I: Int, T: Int
    public var W: [Float]   // [4H][K]
    public var b: [Float]   // [4H]
    public var Wo: [Float]  // [H]
    public var bo: Float

    public var K: Int { I + H }
    public var count: Int { W.count + b.count + Wo.count + 1 }

    /// Glorot-uniform weights from a seeded generator; forget-gate bias 1.
    public init(H: Int, I: Int, T: Int, seed: UInt64) {
        self.H = H; self.I = I; self.T = T
        var rng = SplitMix64(seed: seed)
        let K = I + H
        let lim = Float(sqrt(6.0 / Double(K + H)))
        func u() -> Float { Float(Double(rng.next() >> 11) / Double(1 << 53)) * 2 - 1 }
        W = (0..<(4 * H * K)).map { _ in u() * lim }
        b = [Float](repeating: 0, count: 4 * H)
        for j in H..<(2 * H) { b[j] = 1 }
        Wo = (0..<H).map { _ in u() * Float(sqrt(6.0 / Double(H + 1))) * 0.1 }
        bo = 0
    }

    /// The float parameters a quantised model stands for (a starting point for fine-tuning).
    public init(dequantising m: LSTMModel) {
        H = m.hidden; I = m.stepInputs; T = m.steps
        W = m.W.map { Float($0) / 4096 }
        b = m.b.map { Float(Double($0) / Double(1 << 24)) }
        let so = Float(pow(2.0, Double(m.outFracBits - 12)))
        Wo = m.Wo.map { Float($0) / so }
        bo = Float(Double(m.bo) / pow(2.0, Double(m.outFracBits)))
    }

    /// Flat views for the optimiser.
    func flat() -> [Float] { W + b + Wo + [bo] }
    mutating func setFlat(_ v: [Float]) {
        var o = 0
        for i in 0..<W.count { W[i] = v[o + i] }; o += W.count
        for i in 0..<b.count { b[i] = v[o + i] }; o += b.count
        for i in 0..<Wo.count { Wo[i] = v[o + i] }; o += Wo.count
        bo = v[o]
    }
}

@inline(__always) func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

/// The quadratic activations in float (what `Activation.quadratic` computes in fixed point,
/// lstm.c): tanh_q(x) = x - x|x|/4 on |x| <= 2, +-1 beyond; sigmoid_q(x) = (1 + tanh_q(x/2)) / 2.
@inline(__always) func tanhQ(_ x: Float) -> Float { let t = max(-2, min(2, x)); return t - t * abs(t) / 4 }
@inline(__always) func sigmoidQ(_ x: Float) -> Float { let t = max(-4, min(4, x)); return 0.5 + t / 4 - t * abs(t) / 32 }
/// Their derivatives from the outputs: tanh_q' = sqrt(1 - |y|), sigmoid_q' = sqrt(1 - |2y - 1|) / 4
/// (zero where saturated).
@inline(__always) func dTanhQ(_ y: Float) -> Float { (max(0, 1 - abs(y))).squareRoot() }
@inline(__always) func dSigmoidQ(_ y: Float) -> Float { (max(0, 1 - abs(2 * y - 1))).squareRoot() / 4 }
/// The derivative of tanh / sigmoid at the point where it returned y (q: the quadratic ones).
@inline(__always) func dTanh(_ y: Float, _ q: Bool) -> Float { q ? dTanhQ(y) : 1 - y * y }
@inline(__always) func dSigmoid(_ y: Float, _ q: Bool) -> Float { q ? dSigmoidQ(y) : y * (1 - y) }

/// Forward and backward passes for a batch (backpropagation through time).
final class LSTMWorkspace {
    let H: Int, I: Int, T: Int, K: Int, B: Int
    let quadratic: Bool
    var xh: [Float]      // [T][B][K]
    var gates: [Float]   // [T][B][4H] activated gate values
    var c: [Float]       // [T+1][B][H] (c[0] = 0)
    var tc: [Float]      // [T][B][H] tanh(c_t)
    var y: [Float]       // [B]
    var dz: [Float]      // [B][4H]
    var dxh: [Float]     // [B][K]

    init(H: Int, I: Int, T: Int, B: Int, activation: Activation = .tables) {
        self.H = H; self.I = I; self.T = T; self.K = I + H; self.B = B
        quadratic = activation == .quadratic
        xh = [Float](repeating: 0, count: T * B * (I + H))
        gates = [Float](repeating: 0, count: T * B * 4 * H)
        c = [Float](repeating: 0, count: (T + 1) * B * H)
        tc = [Float](repeating: 0, count: T * B * H)
        y = [Float](repeating: 0, count: B)
        dz = [Float](repeating: 0, count: B * 4 * H)
        dxh = [Float](repeating: 0, count: B * (I + H))
    }

    /// x: [n][T][I] inputs (n <= B). Returns predictions in y[0..<n].
    func forward(_ p: FloatParams, x: UnsafePointer<Float>, n: Int) {
        let H = self.H, I = self.I, T = self.T, K = self.K, G = 4 * H
        xh.withUnsafeMutableBufferPointer { xhp in
        gates.withUnsafeMutableBufferPointer { gp in
        c.withUnsafeMutableBufferPointer { cp in
        tc.withUnsafeMutableBufferPointer { tcp in
        p.W.withUnsafeBufferPointer { Wp in
        p.b.withUnsafeBufferPointer { bp in
            for i in 0..<(n * H) { cp[i] = 0 }
            for t in 0..<T {
                let xt = xhp.baseAddress! + t * B * K
                for s in 0..<n {
                    for i in 0..<I { xt[s * K + i] = x[(s * T + t) * I + i] }
                    if t == 0 { for j in 0..<H { xt[s * K + I + j] = 0 } }
                }
                let z = gp.baseAddress! + t * B * G
                for s in 0..<n { for j in 0..<G { z[s * G + j] = bp[j] } }
                BLAS.sgemm(transA: false, transB: true, m: n, n: G, k: K, alpha: 1, a: xt, lda: K, b: Wp.baseAddress!, ldb: K, beta: 1, c: z, ldc: G)
                let cPrev = cp.baseAddress! + t * B * H, cNow = cp.baseAddress! + (t + 1) * B * H
                let tcNow = tcp.baseAddress! + t * B * H
                let xNext = t + 1 < T ? xhp.baseAddress! + (t + 1) * B * K : nil
                let q = quadratic
                for s in 0..<n {
                    let zs = z + s * G
                    for j in 0..<H {
                        let gi = q ? sigmoidQ(zs[j]) : sigmoid(zs[j]), gf = q ? sigmoidQ(zs[H + j]) : sigmoid(zs[H + j])
                        let gg = q ? tanhQ(zs[2 * H + j]) : tanhf(zs[2 * H + j]), go = q ? sigmoidQ(zs[3 * H + j]) : sigmoid(zs[3 * H + j])
                        zs[j] = gi; zs[H + j] = gf; zs[2 * H + j] = gg; zs[3 * H + j] = go
                        // the fixed-point cell state is clamped to |c| <= 4 (CELL_MAX in lstm.c)
                        let cc = q ? max(-4, min(4, gf * cPrev[s * H + j] + gi * gg)) : gf * cPrev[s * H + j] + gi * gg
                        cNow[s * H + j] = cc
                        let t2 = q ? tanhQ(cc) : tanhf(cc)
                        tcNow[s * H + j] = t2
                        let h = go * t2
                        if let xn = xNext { xn[s * K + I + j] = h } else { hLast(s, j, h) }
                    }
                }
            }
        }}}}}}
        for s in 0..<n {
            var acc = p.bo
            for j in 0..<H { acc += p.Wo[j] * hT[s * H + j] }
            y[s] = acc
        }
    }

    lazy var hT: [Float] = [Float](repeating: 0, count: B * H)
    @inline(__always) func hLast(_ s: Int, _ j: Int, _ h: Float) { hT[s * H + j] = h }

    /// Backward pass for dL/dy in dy[0..<n]; accumulates into grad (same layout as FloatParams.flat()).
    func backward(_ p: FloatParams, dy: [Float], n: Int, grad: inout [Float]) {
        let H = self.H, I = self.I, T = self.T, K = self.K, G = 4 * H
        let offB = p.W.count, offWo = offB + p.b.count, offBo = offWo + H
        var dh = [Float](repeating: 0, count: n * H)
        var dc = [Float](repeating: 0, count: n * H)
        for s in 0..<n {
            grad[offBo] += dy[s]
            for j in 0..<H {
                grad[offWo + j] += dy[s] * hT[s * H + j]
                dh[s * H + j] = dy[s] * p.Wo[j]
            }
        }
        grad.withUnsafeMutableBufferPointer { gradp in
        xh.withUnsafeBufferPointer { xhp in
        gates.withUnsafeBufferPointer { gp in
        c.withUnsafeBufferPointer { cp in
        tc.withUnsafeBufferPointer { tcp in
        dz.withUnsafeMutableBufferPointer { dzp in
        dxh.withUnsafeMutableBufferPointer { dxhp in
        p.W.withUnsafeBufferPointer { Wp in
            for t in stride(from: T - 1, through: 0, by: -1) {
                let g = gp.baseAddress! + t * B * G
                let cPrev = cp.baseAddress! + t * B * H
                let tcNow = tcp.baseAddress! + t * B * H
                let q = quadratic, cNow = cp.baseAddress! + (t + 1) * B * H
                for s in 0..<n {
                    for j in 0..<H {
                        let gi = g[s * G + j], gf = g[s * G + H + j], gg = g[s * G + 2 * H + j], go = g[s * G + 3 * H + j]
                        let t2 = tcNow[s * H + j]
                        let dhv = dh[s * H + j]
                        let dO = dhv * t2
                        var dcv = dc[s * H + j] + dhv * go * dTanh(t2, q)
                        if q && abs(cNow[s * H + j]) >= 4 { dcv = 0 } // clamped cell state
                        let dI = dcv * gg, dG = dcv * gi, dF = dcv * cPrev[s * H + j]
                        dcv *= gf
                        dc[s * H + j] = dcv
                        dzp[s * G + j] = dI * dSigmoid(gi, q)
                        dzp[s * G + H + j] = dF * dSigmoid(gf, q)
                        dzp[s * G + 2 * H + j] = dG * dTanh(gg, q)
                        dzp[s * G + 3 * H + j] = dO * dSigmoid(go, q)
                    }
                }
                let xt = xhp.baseAddress! + t * B * K
                // dW += dz^T * xh_t
                BLAS.sgemm(transA: true, transB: false, m: G, n: K, k: n, alpha: 1, a: dzp.baseAddress!, lda: G, b: xt, ldb: K, beta: 1, c: gradp.baseAddress!, ldc: K)
                for s in 0..<n { for j in 0..<G { gradp[offB + j] += dzp[s * G + j] } }
                if t > 0 {
                    // dxh = dz * W
                    BLAS.sgemm(transA: false, transB: false, m: n, n: K, k: G, alpha: 1, a: dzp.baseAddress!, lda: G, b: Wp.baseAddress!, ldb: K, beta: 0, c: dxhp.baseAddress!, ldc: K)
                    for s in 0..<n { for j in 0..<H { dh[s * H + j] = dxhp[s * K + I + j] } }
                }
            }
        }}}}}}}}
    }
}

/// Loss MAE + lambda * (1 - |PCC|) over a batch, and its gradient with respect to predictions.
public func maePCCLoss(pred: ArraySlice<Float>, truth: ArraySlice<Float>, lambda: Float) -> (loss: Float, mae: Float, pcc: Float, grad: [Float]) {
    let n = pred.count
    let p = Array(pred), t = Array(truth)
    let fn = Float(n)
    var mae: Float = 0
    var grad = [Float](repeating: 0, count: n)
    for i in 0..<n {
        let d = p[i] - t[i]
        mae += abs(d)
        grad[i] = (d > 0 ? 1 : (d < 0 ? -1 : 0)) / fn
    }
    mae /= fn
    let pm = p.reduce(0, +) / fn, tm = t.reduce(0, +) / fn
    var sp: Float = 0, st: Float = 0, cov: Float = 0
    for i in 0..<n {
        sp += (p[i] - pm) * (p[i] - pm); st += (t[i] - tm) * (t[i] - tm); cov += (p[i] - pm) * (t[i] - tm)
    }
    sp /= fn; st /= fn; cov /= fn
    let eps: Float = 1e-12
    let sdp = sqrt(sp + eps), sdt = sqrt(st + eps)
    let pcc = cov / (sdp * sdt)
    if lambda != 0 && n > 1 {
        let sgn: Float = pcc >= 0 ? 1 : -1
        for i in 0..<n {
            let dpcc = ((t[i] - tm) / (sdp * sdt) - pcc * (p[i] - pm) / (sdp * sdp)) / fn
            grad[i] -= lambda * sgn * dpcc
        }
    }
    return (mae + lambda * (1 - abs(pcc)), mae, pcc, grad)
}

/// Adam (Kingma and Ba) with bias correction.
public struct Adam: Sendable {
    public var lr: Float, beta1: Float, beta2: Float, eps: Float
    public var m: [Float], v: [Float]
    public var step: Int = 0

    public init(count: Int, lr: Float = 1e-4, beta1: Float = 0.9, beta2: Float = 0.98, eps: Float = 1e-8) {
        self.lr = lr; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
        m = [Float](repeating: 0, count: count)
        v = [Float](repeating: 0, count: count)
    }

    public mutating func update(_ params: inout [Float], _ grad: [Float]) {
        step += 1
        let c1 = 1 - powf(beta1, Float(step)), c2 = 1 - powf(beta2, Float(step))
        for i in 0..<params.count {
            m[i] = beta1 * m[i] + (1 - beta1) * grad[i]
            v[i] = beta2 * v[i] + (1 - beta2) * grad[i] * grad[i]
            params[i] -= lr * (m[i] / c1) / (sqrt(v[i] / c2) + eps)
        }
    }
}
