/* input.c - where the REPL's lines come from. On a terminal: GNU readline,
 * with its line editing, a history kept in ~/.nnc_history and tab
 * completion (command names first, then per command: file names, the
 * model's tensors, `show` and `set` topics). From a pipe or file: plain
 * lines, no prompt, no history. */
#include "cli/repl/repl.h"
#include "support/util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

static struct {
    bool terminal;
    volatile sig_atomic_t reading; /* inside readline() */
    CompletionNames names;
    void *ctx;
    char *history_path;
} in;

enum { HISTORY_LINES = 1000 };

/* Completion candidates: generator state across calls. */
static const char *const *gen_list;
static int gen_index, gen_model_index;
static bool gen_model;

static char *generate(const char *text, int state) {
    if (state == 0) gen_index = gen_model_index = 0;
    size_t n = strlen(text);
    while (gen_list && gen_list[gen_index]) {
        const char *c = gen_list[gen_index++];
        if (!strncmp(c, text, n)) return xstrdup(c);
    }
    while (gen_model) {
        const char *c = in.names(in.ctx, gen_model_index++);
        if (!c) break;
        if (!strncmp(c, text, n)) return xstrdup(c);
    }
    return NULL;
}

static const char *const show_topics[] = {"graph", "ir", "kir", "llvm", "source", "params", "data", NULL};
static const char *const set_topics[] = {"lr", "batch", "optimizer", "momentum", "weight_decay", "seed", NULL};
static const char *const eval_topics[] = {"validation", "test", "train", NULL};
static const char *const optimizers[] = {"sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw", NULL};
static const char *const train_units[] = {"epochs", "steps", NULL};

/* Chooses what to complete from the words before the cursor. */
static char **complete(const char *text, int start, int end) {
    char first[64] = "", second[64] = "";
    int words = sscanf(rl_line_buffer, "%63s %63s", first, second);
    bool at_first = strspn(rl_line_buffer, " \t") >= (size_t)start;
    bool at_second = words <= 1 || (words == 2 && rl_line_buffer[start - 1] == ' ' && start > 0 &&
                                    strstr(rl_line_buffer, second) >= rl_line_buffer + start);
    gen_list = NULL;
    gen_model = false;
    rl_attempted_completion_over = 1; /* no file names unless asked for below */
    if (at_first) gen_list = repl_command_names;
    else if (!strcmp(first, "load") || !strcmp(first, "save") || !strcmp(first, "load-checkpoint") ||
             !strcmp(first, "plot") || !strcmp(first, "data") || !strcmp(first, "write")) {
        rl_attempted_completion_over = 0;
        return NULL; /* readline's file-name completion */
    } else if (!strcmp(first, "show")) {
        gen_list = at_second ? show_topics : NULL;
        gen_model = at_second;
    } else if (!strcmp(first, "set")) gen_list = at_second ? set_topics : !strcmp(second, "optimizer") ? optimizers : NULL;
    else if (!strcmp(first, "eval")) gen_list = eval_topics;
    else if (!strcmp(first, "train")) gen_list = train_units;
    else if (!strcmp(first, "help")) gen_list = repl_command_names;
    else gen_model = true; /* a statement: the model's names */
    (void)end;
    return rl_completion_matches(text, generate);
}

/* Ctrl-C at the prompt drops the line typed so far, as in a shell; readline
 * has restored the terminal before it passes the signal on. Elsewhere
 * (outside training, which handles it itself) it is ignored, so that it
 * never ends the session. */
static void on_interrupt(int sig) {
    (void)sig;
    if (!in.reading) return;
    if (write(STDOUT_FILENO, "\n", 1) < 0) return;
    rl_on_new_line();
    rl_replace_line("", 0);
    rl_redisplay();
}

void input_open(bool terminal, CompletionNames names, void *ctx) {
    in.terminal = terminal;
    in.names = names;
    in.ctx = ctx;
    if (!terminal) return;
    struct sigaction sa = {.sa_handler = on_interrupt};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    rl_readline_name = "nnc";
    rl_attempted_completion_function = complete;
    /* '.' belongs to tensor names (h.W), '-' to load-checkpoint */
    rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{(,[";
    using_history();
    stifle_history(HISTORY_LINES);
    const char *home = getenv("HOME");
    if (home && *home) {
        StrBuf sb = {0};
        sb_printf(&sb, "%s/.nnc_history", home);
        in.history_path = sb_take(&sb);
        /* none yet: start the file, so that lines can be appended to it */
        if (read_history(in.history_path) != 0) write_history(in.history_path);
    }
}

char *input_line(const char *prompt) {
    if (in.terminal) {
        in.reading = 1;
        char *line = readline(prompt);
        in.reading = 0;
        if (!line) return NULL;
        if (line[strspn(line, " \t")]) {
            HIST_ENTRY *last = history_length ? history_get(history_base + history_length - 1) : NULL;
            if (!last || strcmp(last->line, line) != 0) {
                add_history(line);
                /* at once, so that a session ended by a signal keeps its lines */
                if (in.history_path) append_history(1, in.history_path);
            }
        }
        /* readline's buffer is malloc'ed: hand it on as it is */
        return line;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    return line;
}

void input_close(void) {
    if (!in.terminal) return;
    if (in.history_path && history_truncate_file(in.history_path, HISTORY_LINES) != 0)
        fprintf(stderr, "nnc: warning: cannot write the history to %s\n", in.history_path);
    free(in.history_path);
    in.history_path = NULL;
    /* The history entries are the only memory readline keeps that it does
     * not reach any more once the REPL ends; free them so leak checkers
     * see a clean exit. */
    clear_history();
}
