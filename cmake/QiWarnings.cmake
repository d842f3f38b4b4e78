# Warnings per target; -Werror only when QI_WERROR is on (CI).
function(qi_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(QI_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC's flow analysis sees poorly through ASan's instrumentation: in sanitized builds
    # -Wmaybe-uninitialized reports false positives inside LibTorch's headers (at::Generator).
    target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized)
  endif()
  if(QI_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
