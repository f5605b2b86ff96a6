# embed.cmake - turns a text file into a C string literal.
#   cmake -DIN=FILE -DOUT=HEADER -DNAME=IDENTIFIER -P embed.cmake
# The support code of emitted C files (support.inc) is kept as plain C, so
# that it reads and diffs as C; emit_c.c includes the literal made of it.
file(READ "${IN}" text)
string(REPLACE "\\" "\\\\" text "${text}")
string(REPLACE "\"" "\\\"" text "${text}")
string(REPLACE "\n" "\\n\"\n    \"" text "${text}")
get_filename_component(from "${IN}" NAME)
file(WRITE "${OUT}" "/* Generated from ${from} by embed.cmake. */\nstatic const char ${NAME}[] =\n    \"${text}\";\n")
