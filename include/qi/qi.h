// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Umbrella header of the framework-free core.
#pragma once

#include "qi/calibration.h"
#include "qi/configs.h"
#include "qi/dispatcher.h"
#include "qi/enums.h"
#include "qi/error.h"
#include "qi/inferable_quantizers.h"
#include "qi/kernels.h"
#include "qi/model_config.h"
#include "qi/parallel.h"
#include "qi/registry.h"
#include "qi/tensor_view.h"
#include "qi/trainable_math.h"
#include "qi/trainable_quantizers.h"
#include "qi/version.h"
