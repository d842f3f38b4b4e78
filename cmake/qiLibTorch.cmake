# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
# qi_find_libtorch(<target> [GLOBAL]): the LibTorch inside a torch wheel as the INTERFACE IMPORTED
# target <target>: its headers, libtorch_cpu and libc10, and its C++ ABI macro. torch's own CMake
# package (share/cmake/Torch) is not used: for the CUDA wheels it wants a CUDA toolkit, which a
# CPU build of qi does not need. qi's build (torch/CMakeLists.txt) and the installed package
# (find_package(qi COMPONENTS torch)) both use this file.
#
# Which torch: the folder QI_TORCH_DIR (the torch package, .../site-packages/torch) when it is
# set, else the torch that Python_EXECUTABLE (else Python3_EXECUTABLE, else the python3 that
# FindPython3 picks: the active virtual environment first) would import. Nothing is imported:
# the package is located with importlib and its version read from torch/version.py.
#
# Sets in the caller's scope: QI_TORCH_DIR, QI_TORCH_VERSION (e.g. 2.7.1+cu126) and
# QI_TORCH_CXX11_ABI (0 or 1); QI_LIBTORCH_ERROR is empty on success, else it says what was
# wrong and <target> is not created.
function(qi_find_libtorch target)
  set(global "")
  if(ARGV1 STREQUAL "GLOBAL")
    set(global GLOBAL)
  endif()
  set(QI_LIBTORCH_ERROR "" PARENT_SCOPE)
  set(dir "${QI_TORCH_DIR}")
  if(NOT dir)
    set(python "${Python_EXECUTABLE}")
    if(NOT python)
      set(python "${Python3_EXECUTABLE}")
    endif()
    if(NOT python)
      find_package(Python3 COMPONENTS Interpreter QUIET)
      set(python "${Python3_EXECUTABLE}")
    endif()
    if(NOT python)
      string(CONCAT error "no Python interpreter to locate torch with: set QI_TORCH_DIR to the "
          "torch package folder (.../site-packages/torch) or Python_EXECUTABLE to a python that "
          "has torch")
      set(QI_LIBTORCH_ERROR "${error}" PARENT_SCOPE)
      return()
    endif()
    execute_process(
      COMMAND "${python}" -c
        "import importlib.util as u; s = u.find_spec('torch'); print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')"
      OUTPUT_VARIABLE dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc ERROR_VARIABLE err)
    if(NOT rc EQUAL 0 OR NOT dir)
      string(CONCAT error "${python} has no torch package (${err}): install torch there, or set "
          "QI_TORCH_DIR to the torch package folder (.../site-packages/torch)")
      set(QI_LIBTORCH_ERROR "${error}" PARENT_SCOPE)
      return()
    endif()
    file(TO_CMAKE_PATH "${dir}" dir)
  endif()
  set(QI_TORCH_DIR "${dir}" PARENT_SCOPE)

  set(missing "")
  foreach(f include/ATen/ATen.h include/torch/csrc/api/include/torch/torch.h lib/libtorch_cpu.so
            lib/libc10.so version.py share/cmake/Torch/TorchConfig.cmake)
    if(NOT EXISTS "${dir}/${f}")
      list(APPEND missing "${f}")
    endif()
  endforeach()
  if(missing)
    list(JOIN missing ", " missing)
    string(CONCAT error "${dir} is not the folder of a torch wheel with LibTorch (missing: "
        "${missing})")
    set(QI_LIBTORCH_ERROR "${error}" PARENT_SCOPE)
    return()
  endif()
  file(STRINGS "${dir}/version.py" version REGEX "^__version__ *= *['\"]")
  string(REGEX REPLACE "^__version__ *= *['\"]([^'\"]+)['\"].*" "\\1" version "${version}")
  # The ABI the wheel's libraries were built with: torch's CMake package records it for its users
  # up to torch 2.7; later releases are built with the C++11 ABI only and record nothing.
  file(STRINGS "${dir}/share/cmake/Torch/TorchConfig.cmake" abi REGEX "_GLIBCXX_USE_CXX11_ABI=[01]")
  if(abi STREQUAL "" AND EXISTS "${dir}/share/cmake/Torch/TorchConfig.cmake")
    set(abi "_GLIBCXX_USE_CXX11_ABI=1")
  endif()
  string(REGEX MATCH "_GLIBCXX_USE_CXX11_ABI=([01])" abi "${abi}")
  if(NOT version OR abi STREQUAL "")
    string(CONCAT error "cannot read the version (version.py) or the C++ ABI "
        "(share/cmake/Torch/TorchConfig.cmake) of the torch in ${dir}")
    set(QI_LIBTORCH_ERROR "${error}" PARENT_SCOPE)
    return()
  endif()
  set(QI_TORCH_VERSION "${version}" PARENT_SCOPE)
  set(QI_TORCH_CXX11_ABI "${CMAKE_MATCH_1}" PARENT_SCOPE)

  add_library(${target} INTERFACE IMPORTED ${global})
  set_target_properties(${target} PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${dir}/include;${dir}/include/torch/csrc/api/include"
    INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${dir}/include;${dir}/include/torch/csrc/api/include"
    INTERFACE_COMPILE_DEFINITIONS "_GLIBCXX_USE_CXX11_ABI=${CMAKE_MATCH_1}"
    INTERFACE_COMPILE_FEATURES cxx_std_17
    INTERFACE_LINK_LIBRARIES "${dir}/lib/libtorch_cpu.so;${dir}/lib/libc10.so")
endfunction()
