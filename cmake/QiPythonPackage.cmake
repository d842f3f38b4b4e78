# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
# The native libraries of the Python package quantizers_infrastructure (libqi_core, _core,
# libqi_torch, _torch_fast, libqi_tf_ops), all built by the target qi_python.
#
# A wheel (pyproject.toml through scikit-build-core, which sets SKBUILD_STATE=wheel) builds them in
# the build tree and installs them (component python) into the wheel's package folder with
# RUNPATHs relative to it: $ORIGIN for each other and for the shared libraries that travel with
# them (Highway's), $ORIGIN/../torch/lib and $ORIGIN/../tensorflow for the torch and tensorflow
# packages installed next to it. Every other build (scripts/qi build, pip install -e) writes them
# into python/quantizers_infrastructure, so that the checkout's package works in place; an
# editable install puts that folder on the environment's path with a .pth file.
if(SKBUILD_STATE STREQUAL "wheel")
  set(QI_PYTHON_WHEEL ON)
  set(QI_PYTHON_PACKAGE_DIR ${PROJECT_BINARY_DIR}/quantizers_infrastructure)
else()
  set(QI_PYTHON_WHEEL OFF)
  set(QI_PYTHON_PACKAGE_DIR ${PROJECT_SOURCE_DIR}/python/quantizers_infrastructure)
endif()
set(QI_PYTHON_DESTINATION quantizers_infrastructure)

add_custom_target(qi_python)

if(SKBUILD_STATE STREQUAL "editable")
  set(_qi_pth ${PROJECT_BINARY_DIR}/quantizers_infrastructure-editable.pth)
  file(WRITE ${_qi_pth} "${PROJECT_SOURCE_DIR}/python\n")
  install(FILES ${_qi_pth} DESTINATION . COMPONENT python EXCLUDE_FROM_ALL)
endif()

# qi_python_library(<target> [RUNPATH <entries>...]): <target> is one of the package's libraries;
# RUNPATH lists where its dependencies outside the package are, relative to $ORIGIN.
function(qi_python_library target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "RUNPATH")
  set_target_properties(${target} PROPERTIES
    LIBRARY_OUTPUT_DIRECTORY ${QI_PYTHON_PACKAGE_DIR} BUILD_RPATH "$ORIGIN")
  # Multi-config generators append the configuration name unless told otherwise.
  foreach(config IN ITEMS DEBUG RELEASE RELWITHDEBINFO MINSIZEREL)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY_${config} ${QI_PYTHON_PACKAGE_DIR})
  endforeach()
  add_dependencies(qi_python ${target})
  if(QI_PYTHON_WHEEL)
    set(runpath "$ORIGIN" ${arg_RUNPATH})
    set_target_properties(${target} PROPERTIES INSTALL_RPATH "${runpath}")
    install(TARGETS ${target} LIBRARY DESTINATION ${QI_PYTHON_DESTINATION}
            COMPONENT python EXCLUDE_FROM_ALL)
  endif()
endfunction()

# qi_python_bundle(<imported target>): in a wheel, a copy of that shared library travels in the
# package folder under its SONAME, where the package's $ORIGIN RUNPATH finds it (what
# auditwheel repair does), so that the wheel needs no -dev package, nor the library's runtime
# package, where it is installed. A static library is linked in already and needs nothing.
function(qi_python_bundle target)
  get_target_property(type ${target} TYPE)
  if(NOT QI_PYTHON_WHEEL OR NOT type STREQUAL "SHARED_LIBRARY")
    return()
  endif()
  get_target_property(location ${target} LOCATION)
  file(REAL_PATH "${location}" location)
  get_target_property(soname ${target} IMPORTED_SONAME)
  get_target_property(configs ${target} IMPORTED_CONFIGURATIONS)
  foreach(config IN LISTS configs)
    if(NOT soname)
      get_target_property(soname ${target} IMPORTED_SONAME_${config})
    endif()
  endforeach()
  if(NOT soname)
    message(FATAL_ERROR "qi_python_bundle: ${target} (${location}) has no IMPORTED_SONAME, the "
                        "name its users look for")
  endif()
  message(STATUS "qi: the wheel carries ${location} as ${QI_PYTHON_DESTINATION}/${soname}")
  install(FILES ${location} DESTINATION ${QI_PYTHON_DESTINATION} RENAME ${soname}
          PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ
                      WORLD_EXECUTE
          COMPONENT python EXCLUDE_FROM_ALL)
endfunction()
