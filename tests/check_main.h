/* check_main.h - running a test suite: every test file's main is
 *   int main(void) { return run_suite(suite()); }  */
#ifndef NNC_CHECK_MAIN_H
#define NNC_CHECK_MAIN_H

#include <check.h>

/* Runs the suite (each test in its own process, so a crash fails one test)
 * and returns the process's exit status. */
static inline int run_suite(Suite *s) {
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}

#endif
