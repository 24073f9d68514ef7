"""A private channel: refused without credentials on every protocol, played with a signed URL."""

from __future__ import annotations

import aiohttp

from support import NodeFactory, Process, ffmpeg_publish_args, require_program, run, wait_until


async def ffprobe_codecs(url: str) -> tuple[int, str]:
    code, out, err = await run(
        [require_program("ffprobe"), "-v", "error", "-rw_timeout", "5000000", "-show_entries",
         "stream=codec_name", "-of", "csv=p=0", url],
        30,
    )  # fmt: skip
    return code, out.decode() + err.decode()


async def test_private_stream_needs_a_signed_url(make_node: NodeFactory) -> None:
    async with make_node(publish_mode="keys") as running:
        node = running.node
        await node.accounts.create_user("dave", "a long password")
        await node.accounts.create_channel("dave", "hidden", visibility="private")  # type: ignore[arg-type]
        key = (await node.accounts.create_stream_key("hidden")).key
        async with await Process.start(ffmpeg_publish_args(f"{running.rtmp}/{key}", seconds=30)):
            await wait_until(lambda: node.hub.get("hidden") is not None, 10, "stream hidden")
            await wait_until(
                lambda: (s := node.hub.get("hidden")) is not None and s.stats.keyframes >= 3,
                10,
                "a few segments",
            )
            async with aiohttp.ClientSession() as http:
                # Without credentials: the same 404 an unknown stream gets, on every path.
                for path in ("hidden.flv", "hidden/index.m3u8", "hidden/1.ts"):
                    for name in (path, path.replace("hidden", "nosuch")):
                        async with http.get(f"{running.http}/live/{name}") as response:
                            assert response.status == 404, name
                code, _ = await ffprobe_codecs(f"{running.rtmp}/hidden")
                assert code != 0
                # A forged or widened signature is a 403.
                grant = node.signed_query("/live/hidden")
                forged = grant.replace("rc_sig=", "rc_sig=A")
                async with http.get(f"{running.http}/live/hidden.flv?{forged}") as response:
                    assert response.status == 403
                other = node.signed_query("/live/other")
                async with http.get(f"{running.http}/live/hidden.flv?{other}") as response:
                    assert response.status == 403
                # With the grant, the playlist hands it to every segment URI.
                async with http.get(f"{running.http}/live/hidden/index.m3u8?{grant}") as response:
                    assert response.status == 200
                    playlist = await response.text()
                segments = [line for line in playlist.splitlines() if ".ts" in line]
                assert segments and all(line.endswith(f".ts?{grant}") for line in segments)
                async with http.get(f"{running.http}/live/hidden/{segments[-1]}") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == "video/mp2t"
            for url in (
                f"{running.http}/live/hidden.flv?{grant}",
                f"{running.http}/live/hidden/index.m3u8?{grant}",
                f"{running.rtmp}/hidden?{grant}",
            ):
                code, output = await ffprobe_codecs(url)
                assert code == 0, (url, output)
                assert set(output.split()) == {"h264", "aac"}, url
        denials = node.access.denials
        assert denials["hls:not_found"] >= 2
        assert denials["http-flv:signature_bad_signature"] == 1
        assert denials["http-flv:signature_wrong_path"] == 1
        assert denials["rtmp:not_found"] == 1
