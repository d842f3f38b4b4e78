# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
# cmake -P script behind the ctest test install_consumer_find_package (tests/cpp/install_consumer.cmake).
# Inputs: QI_BUILD_DIR QI_CONSUMER_SRC QI_WORK_DIR QI_GENERATOR QI_MAKE_PROGRAM QI_CXX_COMPILER
# QI_CXX_COMPILER_LAUNCHER (ccache, when the build uses it) QI_BUILD_TYPE, and QI_CONSUMER_TORCH
# (ON: the build has the torch layer) with QI_PYTHON_EXECUTABLE (the python whose torch the
# consumer uses).
cmake_minimum_required(VERSION 3.22)

set(prefix ${QI_WORK_DIR}/prefix)
set(consumer_build ${QI_WORK_DIR}/build)
file(REMOVE_RECURSE ${QI_WORK_DIR})

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${ARGN}\n${out}\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

run_step("install" ${CMAKE_COMMAND} --install ${QI_BUILD_DIR} --prefix ${prefix})
foreach(f include/qi/qi.h lib/cmake/qi/qiConfig.cmake)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "install did not put ${f} under ${prefix}")
  endif()
endforeach()
if(QI_CONSUMER_TORCH)
  foreach(f include/qi/torch/qi_torch.h lib/libqi_torch.so lib/cmake/qi/qiTorchTargets.cmake
            lib/cmake/qi/qiLibTorch.cmake)
    if(NOT EXISTS ${prefix}/${f})
      message(FATAL_ERROR "install did not put ${f} under ${prefix}")
    endif()
  endforeach()
endif()

# configure_consumer(<build dir> [cmake args...]): the consumer's configure command in `configure`.
function(configure_consumer dir)
  set(cmd ${CMAKE_COMMAND} -S ${QI_CONSUMER_SRC} -B ${dir} -G ${QI_GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DCMAKE_CXX_COMPILER=${QI_CXX_COMPILER} ${ARGN})
  if(QI_MAKE_PROGRAM)
    list(APPEND cmd -DCMAKE_MAKE_PROGRAM=${QI_MAKE_PROGRAM})
  endif()
  if(QI_BUILD_TYPE)
    list(APPEND cmd -DCMAKE_BUILD_TYPE=${QI_BUILD_TYPE})
  endif()
  if(QI_CXX_COMPILER_LAUNCHER)
    list(APPEND cmd -DCMAKE_CXX_COMPILER_LAUNCHER=${QI_CXX_COMPILER_LAUNCHER})
  endif()
  set(configure ${cmd} PARENT_SCOPE)
endfunction()

set(torch_args "")
if(QI_CONSUMER_TORCH)
  set(torch_args -DQI_CONSUMER_TORCH=ON -DPython_EXECUTABLE=${QI_PYTHON_EXECUTABLE})
endif()
configure_consumer(${consumer_build} ${torch_args})
run_step("configure the consumer" ${configure})

# The package must come from the scratch prefix, not from the build tree or the system.
file(STRINGS ${consumer_build}/CMakeCache.txt qi_dir REGEX "^qi_DIR:")
string(FIND "${qi_dir}" "${prefix}/" at)
if(NOT at GREATER -1)
  message(FATAL_ERROR "find_package(qi) used '${qi_dir}', not the install prefix ${prefix}")
endif()

run_step("build the consumer" ${CMAKE_COMMAND} --build ${consumer_build})
run_step("run the consumer" ${consumer_build}/qi_install_consumer)
message(STATUS "consumer printed: ${step_output}")
if(NOT step_output MATCHES "quantized: 0\\.296875 -1\\.000000")
  message(FATAL_ERROR "expected 'quantized: 0.296875 -1.000000', got: ${step_output}")
endif()
if(NOT QI_CONSUMER_TORCH)
  return()
endif()

run_step("run the LibTorch consumer" ${consumer_build}/qi_install_consumer_torch
         ${QI_WORK_DIR}/linear.pt)
message(STATUS "LibTorch consumer printed: ${step_output}")
if(NOT step_output MATCHES "hand-quantized: true, reload identical: true")
  message(FATAL_ERROR "expected 'hand-quantized: true, reload identical: true', got: ${step_output}")
endif()

# find_package(qi COMPONENTS torch) refuses what is not the torch qi was built with, and says why.
# expect_configure_error(<name> <regex> [cmake args...])
function(expect_configure_error name regex)
  configure_consumer(${QI_WORK_DIR}/${name} -DQI_CONSUMER_TORCH=ON ${ARGN})
  execute_process(COMMAND ${configure} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0)
    message(FATAL_ERROR "${name}: the consumer configured, expected an error matching '${regex}'")
  endif()
  string(REGEX REPLACE "[ \n]+" " " text "${out} ${err}")  # CMake wraps long messages
  if(NOT text MATCHES "${regex}")
    message(FATAL_ERROR "${name}: expected an error matching '${regex}', got:\n${out}\n${err}")
  endif()
endfunction()

set(fake ${QI_WORK_DIR}/fake-torch/torch)
expect_configure_error(not_torch "${fake} is not the folder of a torch wheel with LibTorch \\(missing: include/ATen/ATen.h, .*version.py"
                       -DQI_TORCH_DIR=${fake})
foreach(f include/ATen/ATen.h include/torch/csrc/api/include/torch/torch.h lib/libtorch_cpu.so
          lib/libc10.so)
  file(WRITE ${fake}/${f} "")
endforeach()
file(WRITE ${fake}/version.py "__version__ = '1.0.0+cpu'\n")
file(WRITE ${fake}/share/cmake/Torch/TorchConfig.cmake
     "set(TORCH_CXX_FLAGS \"-D_GLIBCXX_USE_CXX11_ABI=1\")\n")
expect_configure_error(other_torch "qi::torch was built against torch [0-9][^ ]* \\(C\\+\\+11 ABI [01]\\), but the torch in ${fake} is 1\\.0\\.0\\+cpu"
                       -DQI_TORCH_DIR=${fake})
