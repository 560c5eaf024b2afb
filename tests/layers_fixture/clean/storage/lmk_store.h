/* fixture: a storage header */
#include "lmk_a.h"
