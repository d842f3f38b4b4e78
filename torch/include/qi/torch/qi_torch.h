// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Umbrella header of the LibTorch layer.
#pragma once

#include "qi/qi.h"
#include "qi/torch/model.h"
#include "qi/torch/ops.h"
#include "qi/torch/quantizers.h"
#include "qi/torch/serialize.h"
#include "qi/torch/wrapper.h"
