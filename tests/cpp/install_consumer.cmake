# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
# Installs this build tree to a scratch prefix, then builds and runs tiny programs that use it
# through find_package(qi) + qi::core and, with the torch layer, find_package(qi COMPONENTS torch)
# + qi::torch: the CMake package a C++ user gets after install.
add_test(NAME install_consumer_find_package
  COMMAND ${CMAKE_COMMAND}
    -DQI_BUILD_DIR=${CMAKE_BINARY_DIR}
    -DQI_CONSUMER_SRC=${CMAKE_SOURCE_DIR}/tests/install_consumer
    -DQI_WORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/install_consumer
    -DQI_GENERATOR=${CMAKE_GENERATOR}
    -DQI_MAKE_PROGRAM=${CMAKE_MAKE_PROGRAM}
    -DQI_CXX_COMPILER=${CMAKE_CXX_COMPILER}
    -DQI_CXX_COMPILER_LAUNCHER=${CMAKE_CXX_COMPILER_LAUNCHER}
    -DQI_BUILD_TYPE=${CMAKE_BUILD_TYPE}
    -DQI_CONSUMER_TORCH=${QI_WITH_TORCH}
    -DQI_PYTHON_EXECUTABLE=${Python_EXECUTABLE}
    -P ${CMAKE_SOURCE_DIR}/tests/install_consumer/run_test.cmake)
set_tests_properties(install_consumer_find_package PROPERTIES TIMEOUT 600 LABELS install)
