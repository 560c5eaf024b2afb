/* landmark base — symbol visibility. The build compiles with -fvisibility=hidden; what a
 * module exports is marked LMK_API, so a shared liblandmark exposes the public headers'
 * functions and nothing else. LMK_INTERNAL marks functions shared between a module's files
 * and its tests: hidden from a shared library, linkable from the static one. */
#ifndef LMK_EXPORT_H
#define LMK_EXPORT_H

#define LMK_API __attribute__((visibility("default")))
#define LMK_INTERNAL

#endif
