# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
# The CUDA toolchain of QI_WITH_CUDA (the CUDA layer, torch/csrc/cuda). It needs no GPU and no
# CUDA install: nvcc is, in this order, CMAKE_CUDA_COMPILER when given, the PyPI toolchain of
# requirements-cuda.txt in <checkout>/.cuda-tools (scripts/qi cuda-build installs it), nvcc on
# PATH, or /usr/local/cuda/bin/nvcc (a GPU machine's own). Sets QI_CUDA_INCLUDE_DIRS (the CUDA
# runtime headers, for the C++ sources that include c10/cuda) and QI_CUDA_VERSION.
if(NOT CMAKE_CUDA_COMPILER)
  set(_qi_nvcc_candidates "${PROJECT_SOURCE_DIR}/.cuda-tools/nvidia/cu13/bin/nvcc")
  find_program(_qi_nvcc_on_path nvcc)
  list(APPEND _qi_nvcc_candidates "${_qi_nvcc_on_path}" /usr/local/cuda/bin/nvcc)
  foreach(candidate IN LISTS _qi_nvcc_candidates)
    if(candidate AND EXISTS "${candidate}")
      set(CMAKE_CUDA_COMPILER "${candidate}" CACHE FILEPATH "nvcc of qi's CUDA layer")
      break()
    endif()
  endforeach()
  if(NOT CMAKE_CUDA_COMPILER)
    message(FATAL_ERROR "QI_WITH_CUDA: no nvcc found. Install the PyPI toolchain with "
      "scripts/qi cuda-build (requirements-cuda.txt into .cuda-tools), put nvcc on PATH, or "
      "configure with -DCMAKE_CUDA_COMPILER=/path/to/nvcc")
  endif()
endif()
# The H200 (sm_90) unless told otherwise; CUDA 13 compiles for sm_75 and newer only.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90 CACHE STRING "GPU architectures of qi's CUDA kernels")
endif()
set(CMAKE_CUDA_HOST_COMPILER "${CMAKE_CXX_COMPILER}" CACHE FILEPATH "host compiler of nvcc")
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_EXTENSIONS OFF)
# The static runtime: the library then loads next to any torch build (its own libcudart is
# another major version on this machine: cu126 against CUDA 13).
set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
if(QI_CCACHE AND NOT CMAKE_CUDA_COMPILER_LAUNCHER)
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${QI_CCACHE})
endif()
set(QI_CUDA_VERSION ${CMAKE_CUDA_COMPILER_VERSION})
set(QI_CUDA_INCLUDE_DIRS ${CMAKE_CUDA_TOOLKIT_INCLUDE_DIRECTORIES})
message(STATUS "qi: CUDA ${QI_CUDA_VERSION} (${CMAKE_CUDA_COMPILER}), architectures "
               "${CMAKE_CUDA_ARCHITECTURES}")

# qi_cuda_kernel_options(<target>): what bit-exactness with the CPU needs of nvcc. -fmad=false:
# never contract a*b+c into an FMA (the CPU side compiles with -ffp-contract=off); division and
# square root stay IEEE-rounded and subnormals are kept (nvcc's defaults without
# --use_fast_math, stated so that no global flag changes them).
function(qi_cuda_kernel_options target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-fmad=false -prec-div=true -prec-sqrt=true -ftz=false>
    $<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off>)
endfunction()
