# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
# qi_macro_prefix_map(<out var> <dir>): "-fmacro-prefix-map=<dir>/=" when needed, so that __FILE__
# (in error and assertion messages, qi's and LibTorch's) names files under <dir> without this
# machine's path to them; empty when ccache already passes paths under CCACHE_BASEDIR to the
# compiler as relative ones (scripts/qi sets it to the checkout), which keeps the compile lines of
# every checkout, and so ccache's objects, the same.
function(qi_macro_prefix_map out dir)
  set(flag "-fmacro-prefix-map=${dir}/=")
  if(CMAKE_CXX_COMPILER_LAUNCHER MATCHES "ccache" AND NOT "$ENV{CCACHE_BASEDIR}" STREQUAL "")
    string(FIND "${dir}/" "$ENV{CCACHE_BASEDIR}/" at)
    if(at EQUAL 0)
      set(flag "")
    endif()
  endif()
  set(${out} "${flag}" PARENT_SCOPE)
endfunction()
