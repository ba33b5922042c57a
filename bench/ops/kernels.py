"""CPU kernels where the CPU profile says the stock ones cost, each the same function with the same first and second
derivatives as the stock composition (tests/ops/test_kernels.py, float64): the 2x2 max pool by the channels-last kernel (the same values and indices), batch norm with faster statistics and a short double
backward, the 3x3 convolution whose double backward takes the weight term from the backward-weights kernel, and batch
norm + pool + ReLU fused for first-order backward passes; for memory, the product f * softplus(a) saving f and a
only, and the pool and the fused block's statistics ROWS examples at a time. They run from FAST_MIN_POSITIONS
positions per channel on, where they measured faster than the stock ones. Which kernels a forward uses is decided in
one place, bench/ops/dispatch.py; what each one gains on a whole step is in docs/speed.md."""
from __future__ import annotations

import torch
import torch.nn.functional as F


SOFTPLUS_THRESHOLD = 20.0     # F.softplus's default: above it, softplus(x) = x and its derivative is 1
ROWS = 8                      # examples per temporary in the pool and the fused block's statistics (memory)
FAST_MIN_POSITIONS = 980      # N * H * W from which the CPU kernels below measured faster than the stock ones
#                               (5 x 14 x 14; below, the stock kernels' lower fixed costs win: docs/speed.md)


def _large(x: torch.Tensor) -> bool:
    """Whether an NCHW tensor has at least FAST_MIN_POSITIONS positions per channel."""
    return x.numel() >= FAST_MIN_POSITIONS * x.shape[1]


class _MulSoftplus(torch.autograd.Function):
    """f * softplus(a) saving f and a only: the product is written into softplus's buffer and the backward
    recomputes softplus(a), so one full-size tensor less is held from the forward to the backward and two fewer are
    made in it than by the stock product (meta-dropout's query pass, where a task's memory peaks). With
    create_graph the backward runs through differentiable ops, the same derivatives."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f, a)
        return F.softplus(a).mul_(f)                                    # in softplus's buffer: no temporary

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, a = ctx.saved_tensors
        if torch.is_grad_enabled():
            return grad * F.softplus(a), (grad * f) * _softplus_derivative(a)
        d_a = _softplus_derivative(a).mul_(grad).mul_(f)                  # in place: no full-size temporary
        return F.softplus(a).mul_(grad), d_a


def _any_above_threshold(x: torch.Tensor) -> bool:
    """Whether some entry of x exceeds the softplus threshold (always True under torch.func transforms, where the
    branch cannot depend on values): below it the `where` is the identity, and skipping it saves two temporaries."""
    return not _plain(x) or x.numel() == 0 or bool(x.amax() > SOFTPLUS_THRESHOLD)


def _softplus_derivative(x: torch.Tensor) -> torch.Tensor:
    """sigmoid(x), 1 above the threshold (as the stock kernel), in a new tensor; the `where` pass only when some
    entry exceeds the threshold."""
    return torch.where(x > SOFTPLUS_THRESHOLD, 1.0, torch.sigmoid(x)) if _any_above_threshold(x) else torch.sigmoid(x)


def mul_softplus(f: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """f * softplus(a); for tensors of one shape outside torch.func transforms by _MulSoftplus (less memory, the
    same values and derivatives), else the composition (broadcasting)."""
    if f.shape == a.shape and _plain(f, a):
        return _MulSoftplus.apply(f, a)
    return f * F.softplus(a)


class _MaxPool2(torch.autograd.Function):
    """F.max_pool2d(x, 2) on an NCHW tensor: the forward by the channels-last kernel (much faster on the CPU than the
    NCHW one; the same values and the same indices, the first maximum of each window), the backward by the stock
    kernel with those indices. The backward is differentiable in the gradient only (the stock double backward also
    materializes zeros for the input)."""

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        pooled = x.new_empty(n, c, h // 2, w // 2)
        indices = torch.empty(pooled.shape, dtype=torch.long, device=x.device)
        for first in range(0, n, ROWS):             # channels-last copies of ROWS examples at a time (memory)
            part = slice(first, first + ROWS)
            pooled[part], indices[part] = F.max_pool2d(x[part].contiguous(memory_format=torch.channels_last), 2,
                                                       return_indices=True)
        return pooled, indices

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output[1])
        ctx.input_shape = inputs[0].shape
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def vmap(info, in_dims: tuple, x: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[int, int]]:
        x = x.movedim(in_dims[0], 0)                     # the vmapped dim joins the batch: one kernel call
        pooled, indices = _MaxPool2.apply(x.flatten(0, 1))
        return (pooled.unflatten(0, x.shape[:2]), indices.unflatten(0, x.shape[:2])), (0, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _) -> torch.Tensor:
        (indices,) = ctx.saved_tensors
        like_input = grad.new_empty(()).expand(ctx.input_shape)      # sizes only: the kernel reads no values
        return torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), like_input, [2, 2], [2, 2],
                                                               [0, 0], [1, 1], False, indices)


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max pool with stride 2, as F.max_pool2d(x, 2): the channels-last forward for large inputs, stock below."""
    return _MaxPool2.apply(x)[0] if _large(x) else F.max_pool2d(x, 2)


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over all dims but dim 1 of an NCHW tensor, by contiguous rows."""
    return t.flatten(2).sum(2).sum(0)


def _statistics(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, x - mean, 1 / sqrt(biased var + eps)) per channel of an NCHW tensor, by contiguous row reductions
    (the variance in two passes)."""
    c = x.shape[1]
    count = x.numel() // c
    mean = _channel_sum(x) / count
    centered = x - mean.view(c, 1, 1)
    var = torch.linalg.vector_norm(centered.flatten(2), dim=2).square().sum(0) / count
    return mean, centered, (var + eps).rsqrt()


def _mean_invstd(x: torch.Tensor, eps: float, rows: int = ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """_statistics' mean and 1 / sqrt(var + eps), bit for bit, with x - mean made `rows` examples at a time."""
    c = x.shape[1]
    count = x.numel() // c
    mean = _channel_sum(x) / count
    norms = torch.cat([torch.linalg.vector_norm((part - mean.view(c, 1, 1)).flatten(2), dim=2)
                       for part in x.split(rows)])
    return mean, (norms.square().sum(0) / count + eps).rsqrt()


class _BatchNorm(torch.autograd.Function):
    """Training-mode F.batch_norm(x, None, None, weight, beta, eps) on the CPU: the statistics by reductions over
    contiguous rows (faster than the stock kernel's statistics pass), the backward by the stock backward kernel given
    those statistics, its derivative by _BatchNormBackward (tests/ops/test_kernels.py: values, first and second
    derivatives equal the stock ones in float64, also under vmap)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, beta: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, centered, invstd = _statistics(x, eps)
        c = x.shape[1]
        return centered.mul_((invstd * weight).view(c, 1, 1)).add_(beta.view(c, 1, 1)), mean, invstd

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, _, ctx.eps = inputs
        ctx.save_for_backward(x, weight, *output[1:])
        ctx.mark_non_differentiable(*output[1:])

    @staticmethod
    def backward(ctx, grad: torch.Tensor, *_) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        backward = _BatchNormBackward.apply if torch.is_grad_enabled() else _BatchNormBackward.forward
        return (*backward(grad, x, weight, mean.detach(), invstd.detach(), ctx.eps,
                          list(ctx.needs_input_grad[:3])), None)


class _BatchNormBackward(torch.autograd.Function):
    """The training-mode batch-norm backward by the stock kernel, (g, x, w) -> (dx, dw, dbeta), with its own
    derivative written out per channel (the statistics as functions of x, as in the stock double backward, whose
    composite formula is about 50 small ops; tests/ops/test_kernels.py: equal in float64 and by gradgradcheck). With
    c = x - mean, s = invstd, M = N H W, A = mean(g c), and the incoming (ggx, ggw, ggb):
    dx = w s (g - mean g) - w s^3 A c, dw = M s A, dbeta = sum g."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                eps: float, mask: list[bool]) -> tuple[torch.Tensor | None, ...]:
        return torch.ops.aten.native_batch_norm_backward(grad, x, weight, None, None, mean, invstd, True, eps, mask)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        grad, x, weight, mean, invstd, _, _ = inputs
        ctx.save_for_backward(grad, x, weight, mean, invstd)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, gg_x: torch.Tensor | None, gg_w: torch.Tensor | None,
                 gg_b: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        g, x, w, mean, s = ctx.saved_tensors
        need_grad, need_x, need_w = ctx.needs_input_grad[:3]
        per_channel = (-1, 1, 1)
        count = x.numel() // x.shape[1]
        c = x - mean.view(per_channel)
        g_mean = _channel_sum(g) / count
        a = _channel_dot(g, c) / count                                    # A = mean(g c)
        s3 = s ** 3
        zero = torch.zeros_like(s)
        gg_mean = b = d = zero                                            # G = mean(ggx), B, D: none without ggx
        if gg_x is not None:
            gg_mean = _channel_sum(gg_x) / count
            b = _channel_dot(gg_x, c) / count                             # B = mean(ggx c)
            d = _channel_dot(gg_x, g) / count - gg_mean * g_mean          # D = mean(ggx (g - mean g))
        has_gg_w, gg_w = gg_w is not None, zero if gg_w is None else gg_w
        gg_b = zero if gg_b is None else gg_b
        alpha = gg_w * s - w * s3 * b                                     # ggw s - w s^3 B
        d_grad = d_x = d_w = None
        if need_grad:            # d/dg: w s (ggx - G) + (ggw s - w s^3 B) c + ggb, one pass per full-size term
            d_grad = _scale_shift(c, alpha, gg_b - gg_mean * w * s)
            if gg_x is not None:
                d_grad.addcmul_(gg_x, (w * s).view(per_channel))
        if need_x and (gg_x is not None or has_gg_w):
            # d/dx: (w (3 s^5 A B - s^3 D) - ggw s^3 A) c + (ggw s - w s^3 B) (g - mean g) - w s^3 A (ggx - G)
            p = w * (3 * s3 * s * s * a * b - s3 * d) - gg_w * s3 * a
            d_x = _scale_shift(c, p, w * s3 * a * gg_mean - alpha * g_mean)
            d_x.addcmul_(g, alpha.view(per_channel))
            if gg_x is not None:
                d_x.addcmul_(gg_x, (-w * s3 * a).view(per_channel))
        if need_w and gg_x is not None:                                   # d/dw: M (s D - s^3 A B)
            d_w = count * (s * d - s3 * a * b)
        return d_grad, d_x, d_w, None, None, None, None


def _scale_shift(t: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """t * scale + shift per channel of an NCHW tensor, in a new tensor: a product, then the shift in place (faster on
    the CPU than torch.addcmul, whose kernel is slow when its first operand is the broadcast one)."""
    per_channel = (-1, 1, 1)
    return (t * scale.view(per_channel)).add_(shift.view(per_channel))


def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b) over all dims but dim 1 of two NCHW tensors, by row dot products."""
    return torch.linalg.vecdot(a.flatten(2), b.flatten(2)).sum(0)


def batch_norm(x: torch.Tensor, scale: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
    """Training-mode F.batch_norm(x, None, None, scale, beta, eps): by _BatchNorm for large inputs, the stock kernel
    below (for calls where the stock kernel is exact: bench/ops/dispatch.py decides)."""
    if _large(x):
        return _BatchNorm.apply(x.contiguous(), scale, beta, eps)[0]
    return F.batch_norm(x, None, None, scale, beta, training=True, eps=eps)


_UNIT = [1, 1]           # stride and dilation of every convolution here


def _conv_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding: list[int],
                   has_bias: bool, mask: list[bool]) -> tuple[torch.Tensor | None, ...]:
    """(dx, dw, db) of a stride-1 convolution by the stock kernel, for the outputs in mask."""
    bias_sizes = [weight.shape[0]] if has_bias else None
    return torch.ops.aten.convolution_backward(grad_out, x, weight, bias_sizes, _UNIT, padding, _UNIT, False,
                                               [0, 0], 1, mask)


class _Conv2dBackward(torch.autograd.Function):
    """The convolution's backward, (gO, x, w) -> (dx, dw, db) by the stock kernel, with its derivative from the
    kernels that run fast: the stock double backward takes the weight term, the correlation of the incoming ggx
    with gO, from a forward convolution with batch and channels swapped (a kernel as large as the image, slower on
    the CPU than the backward-weights kernel that computes it here). forward(ctx, ...) style: torch binds a
    setup_context Function's arguments by inspect.signature on every call."""

    @staticmethod
    def forward(ctx, grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding: list[int],
                has_bias: bool, mask: list[bool]) -> tuple[torch.Tensor | None, ...]:
        ctx.padding = padding
        ctx.save_for_backward(grad_out, x, weight)
        ctx.set_materialize_grads(False)
        return _conv_backward(grad_out, x, weight, padding, has_bias, mask)

    @staticmethod
    def backward(ctx, gg_x: torch.Tensor | None, gg_w: torch.Tensor | None,
                 gg_b: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        grad_out, x, weight = ctx.saved_tensors
        need_grad_out, need_x, need_w = ctx.needs_input_grad[:3]
        d_grad_out = None
        if need_grad_out:        # dx, dw and db are linear in gO: conv(ggx, w) + conv(x, ggw) + ggb
            pairs = ((gg_x, weight), (x, gg_w))
            terms = [F.conv2d(a, b, None, padding=ctx.padding) for a, b in pairs if a is not None and b is not None]
            if gg_b is not None:
                terms.append(gg_b.view(-1, 1, 1).expand_as(grad_out))
            d_grad_out = sum(terms[1:], terms[0]) if terms else None
        mask = [need_x and gg_w is not None, need_w and gg_x is not None, False]
        d_x = d_w = None
        if any(mask):            # d/dx = conv_transpose(gO, ggw), d/dw = correlation(ggx, gO): one backward call
            d_x, d_w, _ = _conv_backward(grad_out, x if gg_x is None else gg_x, weight if gg_w is None else gg_w,
                                         ctx.padding, False, mask)
        return d_grad_out, d_x, d_w, None, None, None


class _Conv2d(torch.autograd.Function):
    """F.conv2d(x, weight, bias, padding=padding) with stride 1, backward by _Conv2dBackward (with a graph; without
    one, the stock kernel directly)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: int) -> torch.Tensor:
        ctx.padding, ctx.has_bias = [padding, padding], bias is not None
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        backward = _Conv2dBackward.apply if torch.is_grad_enabled() else _conv_backward
        grads = backward(grad_out, x, weight, ctx.padding, ctx.has_bias, mask)
        return (*(g if m else None for g, m in zip(grads, mask)), None)


def _plain(*tensors: torch.Tensor | None) -> bool:
    """True outside torch.func transforms (no functorch wrapper on any of the tensors)."""
    return not any(t is not None and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int = 1) -> torch.Tensor:
    """F.conv2d with stride 1 on [N, C, H, W]: outside torch.func transforms and for large inputs (_large) by _Conv2d
    (the same values and derivatives, a cheaper second derivative), else stock. Its double backward computes only
    the terms whose inputs need them: the stock one also runs a transposed convolution for the gradient of an input
    image that needs none (block 1)."""
    if _large(x) and _plain(x, weight, bias):
        return _Conv2d.apply(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding)


class _BatchNormPoolReLU(torch.autograd.Function):
    """relu(max_pool2(batch_norm(x))) with the shift only, for forwards whose backward is first order (the query
    pass, the meta-test's inner loop). A positive per-channel scale commutes with the max, so the pool runs on x
    and only the pooled quarter is normalized; the backward is then one full-size pass, dx = -s^3 A (x - mean)
    - s mean(g), plus s g scattered to the maxima (g: the gradient at the pooled outputs, A = mean(g c) over them).
    With create_graph, the backward is taken through the separate fast ops instead (second derivatives).
    tests/ops/test_kernels.py: equal to the separate ops in float64, values, indices of ties and gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
        c = x.shape[1]
        mean, invstd = _mean_invstd(x, eps)
        pooled, indices = _MaxPool2.forward(x)
        pooled_centered = pooled.sub_(mean.view(c, 1, 1))
        out = torch.relu_(pooled_centered.mul(invstd.view(c, 1, 1)).add_(beta.view(c, 1, 1)))  # as _BatchNorm's
        ctx.eps = eps
        ctx.save_for_backward(x, beta, out, mean, invstd, indices, pooled_centered)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, beta, out, mean, invstd, indices, pooled_centered = ctx.saved_tensors
        if torch.is_grad_enabled():                       # create_graph: through the differentiable separate ops
            return (*_separate_bn_pool_relu_grads(x, beta, ctx.eps, grad, ctx.needs_input_grad[:2]), None)
        c = x.shape[1]
        per_channel = (c, 1, 1)
        count = x.numel() // c
        g = torch.where(out > 0, grad, 0.0)                                # ReLU
        g_sum = _channel_sum(g)
        s3a = invstd ** 3 * _channel_sum(g * pooled_centered) / count     # s^3 A, A = mean(g c) at the maxima
        d_x = None
        if ctx.needs_input_grad[0]:
            d_x = _scale_shift(x, -s3a, s3a * mean - invstd * g_sum / count)
            d_x.flatten(2).scatter_add_(2, indices.flatten(2), g.mul_(invstd.view(per_channel)).flatten(2))
        return d_x, g_sum if ctx.needs_input_grad[1] else None, None


def _separate_bn_pool_relu_grads(x: torch.Tensor, beta: torch.Tensor, eps: float, grad: torch.Tensor,
                                needed: tuple[bool, ...]) -> tuple[torch.Tensor | None, ...]:
    """Gradients of relu(max_pool2(batch_norm(x, beta))) for x and beta (those needed) through the separate ops,
    with a graph."""
    with torch.enable_grad():
        y = torch.relu(max_pool2(_BatchNorm.apply(x, torch.ones_like(beta), beta, eps)[0]))
        inputs = [t for t, n in zip((x, beta), needed) if n]
        grads = iter(torch.autograd.grad(y, inputs, grad, create_graph=True))
    return tuple(next(grads) if n else None for n in needed)


def bn_pool_relu(f: torch.Tensor, beta: torch.Tensor, eps: float, groups: int = 1) -> torch.Tensor:
    """relu(max_pool2(batch_norm(f, beta))) with the shift only and per-group statistics (groups > 1, as in
    bench/ops/dispatch.py's batch norm), fused for first-order backward passes (_BatchNormPoolReLU)."""
    n, c, h, w = f.shape
    x = f.contiguous().view(n // groups, groups * c, h, w)
    out = _BatchNormPoolReLU.apply(x, beta.repeat(groups) if groups > 1 else beta, eps)
    return out.view(n, c, h // 2, w // 2)


def fused_block_applies(f: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None) -> bool:
    """Whether bn_pool_relu may run: shift-only batch norm on a large input, outside torch.func transforms."""
    return gamma is None and _large(f) and _plain(f, beta)
