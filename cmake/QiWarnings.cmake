# Warnings per target; -Werror only when QI_WERROR is on (CI).
function(qi_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(QI_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
