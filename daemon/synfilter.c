#include "synfilter.h"

#include <linux/filter.h>
#include <sys/socket.h>

int synfilter_attach(int fd)
{
    /* A socket filter sees a TCP segment from its header on: byte 13 holds
     * the flags; a SYN without ACK opens a connection. */
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),       /* SYN | ACK */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1), /* SYN alone? */
        BPF_STMT(BPF_RET | BPF_K, 0),                    /* drop it */
        BPF_STMT(BPF_RET | BPF_K, 0xffffffff),           /* keep the rest */
    };
    struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};

    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
}
