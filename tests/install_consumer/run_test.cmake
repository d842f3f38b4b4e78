# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
# cmake -P script behind the ctest test install_consumer_find_package (tests/cpp/install_consumer.cmake).
# Inputs: QI_BUILD_DIR QI_CONSUMER_SRC QI_WORK_DIR QI_GENERATOR QI_MAKE_PROGRAM QI_CXX_COMPILER
# QI_BUILD_TYPE.
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
if(NOT EXISTS ${prefix}/include/qi/qi.h)
  message(FATAL_ERROR "install did not put include/qi/qi.h under ${prefix}")
endif()

set(configure ${CMAKE_COMMAND} -S ${QI_CONSUMER_SRC} -B ${consumer_build} -G ${QI_GENERATOR}
  -DCMAKE_PREFIX_PATH=${prefix}
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_CXX_COMPILER=${QI_CXX_COMPILER})
if(QI_MAKE_PROGRAM)
  list(APPEND configure -DCMAKE_MAKE_PROGRAM=${QI_MAKE_PROGRAM})
endif()
if(QI_BUILD_TYPE)
  list(APPEND configure -DCMAKE_BUILD_TYPE=${QI_BUILD_TYPE})
endif()
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
