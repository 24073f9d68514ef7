/* Publishes an FLV file over RTMP with librtmp, the library OBS and rtmpdump use, paced in
 * real time by the tag timestamps. Built by the tests with the system's librtmp.
 * usage: librtmp_publish rtmp://host:port/app/key file.flv */
#include <librtmp/log.h>
#include <librtmp/rtmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 3) return 64;
    FILE *file = fopen(argv[2], "rb");
    if (!file) return 66;
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    unsigned char *data = malloc(size);
    if (fread(data, 1, size, file) != (size_t)size) return 66;
    fclose(file);

    RTMP_LogSetLevel(RTMP_LOGERROR);
    RTMP *rtmp = RTMP_Alloc();
    RTMP_Init(rtmp);
    if (!RTMP_SetupURL(rtmp, argv[1])) return 2;
    RTMP_EnableWrite(rtmp);
    if (!RTMP_Connect(rtmp, NULL)) return 3;
    if (!RTMP_ConnectStream(rtmp, 0)) return 4;

    double start = now_ms();
    long offset = 13; /* FLV header + PreviousTagSize0 */
    while (offset + 11 <= size) {
        long body = (data[offset + 1] << 16) | (data[offset + 2] << 8) | data[offset + 3];
        long ts = (data[offset + 7] << 24) | (data[offset + 4] << 16) | (data[offset + 5] << 8)
                  | data[offset + 6];
        long tag = 11 + body + 4;
        if (offset + tag > size) break;
        double wait = ts - (now_ms() - start);
        if (wait > 0) {
            struct timespec pause = {(time_t)(wait / 1000), (long)((long)wait % 1000) * 1000000L};
            nanosleep(&pause, NULL);
        }
        if (RTMP_Write(rtmp, (const char *)data + offset, (int)tag) <= 0) return 5;
        offset += tag;
    }
    RTMP_Close(rtmp);
    RTMP_Free(rtmp);
    free(data);
    return 0;
}
