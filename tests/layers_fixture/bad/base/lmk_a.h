/* fixture: a base header */
#include "nowhere.h"
