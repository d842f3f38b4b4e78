# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""Fake (meta) kernels of the qi ops, for torch.compile, torch.export and FakeTensor: the shape,
dtype and memory format of each output, without computing it. One function per op; imported by
the PyTorch front end right after the op library is loaded."""

import torch


def _like(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _not_needed(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty((0,))


@torch.library.register_fake("qi::fake_quant")
def _fake_quant(x, quantizer):
    return _like(x)


@torch.library.register_fake("qi::fake_quant.out")
def _fake_quant_out(x, quantizer, *, out):
    return None


@torch.library.register_fake("qi::quantize.out")
def _quantize_out(x, plan, channel_axis, input_rank, *, out):
    return None


@torch.library.register_fake("qi::quantize")
def _quantize(x, plan, channel_axis, input_rank):
    return _like(x)


@torch.library.register_fake("qi::symmetric_quant")
def _symmetric_quant(x, threshold, num_bits, is_signed, channel_axis, mode, grad_scale,
                     grad_scale_axis=None, min_threshold=0.0, power_of_two=False,
                     group_size=None, group_axis=-1):
    return _like(x)


@torch.library.register_fake("qi::_symmetric_quant_backward")
def _symmetric_quant_backward(grad, x, threshold, num_bits, is_signed, channel_axis, mode,
                              grad_scale, grad_scale_axis, min_threshold, power_of_two, need_x,
                              need_threshold, group_size=None, group_axis=-1):
    return (_like(x) if need_x else _not_needed(x),
            _like(threshold) if need_threshold else _not_needed(threshold))


@torch.library.register_fake("qi::uniform_quant")
def _uniform_quant(x, min_range, max_range, num_bits, channel_axis, mode, grad_scale, activation,
                   grad_scale_axis=None, group_size=None, group_axis=-1):
    return _like(x)


@torch.library.register_fake("qi::_uniform_quant_backward")
def _uniform_quant_backward(grad, x, min_range, max_range, num_bits, channel_axis, mode,
                            grad_scale, activation, grad_scale_axis, need_x, need_range,
                            group_size=None, group_axis=-1):
    return (_like(x) if need_x else _not_needed(x),
            _like(min_range) if need_range else _not_needed(min_range),
            _like(max_range) if need_range else _not_needed(max_range))


@torch.library.register_fake("qi::format_quant")
def _format_quant(x, scale, tensor_scale, format, scaling, channel_axis, mode, grad_scale,
                  grad_scale_axis=None, group_size=None, group_axis=-1, tensor_grad_scale=None):
    return _like(x)


@torch.library.register_fake("qi::_format_quant_backward")
def _format_quant_backward(grad, x, scale, tensor_scale, format, scaling, channel_axis, mode,
                           grad_scale, grad_scale_axis, group_size, group_axis, need_x,
                           need_scale, tensor_grad_scale=None):
    return (_like(x) if need_x else _not_needed(x),
            _like(scale) if need_scale else _not_needed(scale),
            _like(tensor_scale) if need_scale else _not_needed(tensor_scale))


@torch.library.register_fake("qi::soft_round")
def _soft_round(w, alpha, threshold_or_min, num_bits, power_of_two, channel_axis, training,
                max_range=None):
    return _like(w)


@torch.library.register_fake("qi::_soft_round_backward")
def _soft_round_backward(grad, alpha, threshold_or_min, num_bits, power_of_two, channel_axis,
                         max_range):
    return _like(alpha)


@torch.library.register_fake("qi::soft_round_regularization")
def _soft_round_regularization(alpha, beta):
    return alpha.new_empty(())


@torch.library.register_fake("qi::_soft_round_regularization_backward")
def _soft_round_regularization_backward(grad, alpha, beta):
    return _like(alpha)
