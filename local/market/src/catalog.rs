//! The fixed vocabulary the generator draws from: a Korean category tree of 3 and 4 levels with
//! typical prices, item names, title and description fragments, nicknames and trade locations.

/// One leaf of the category tree, with what is typically sold there.
#[derive(Debug, PartialEq, Eq)]
pub struct Category {
    /// Names from the top level down: 3 or 4 of them.
    pub path: &'static [&'static str],
    /// The site's number for the leaf (`categorySeq`).
    pub seq: u32,
    /// Item names that head a title in this leaf.
    pub items: &'static [&'static str],
    /// The cheapest typical asking price, KRW.
    pub min_price: i64,
    /// The dearest typical asking price, KRW.
    pub max_price: i64,
}

impl Category {
    /// The leaf's name (`categoryName` in the flight data).
    pub fn name(&self) -> &'static str {
        self.path.last().copied().unwrap_or_default()
    }

    /// Whether an asking price above 1,000,000 KRW is typical here.
    pub fn is_premium(&self) -> bool {
        self.max_price > 1_500_000
    }
}

const fn leaf(
    path: &'static [&'static str],
    seq: u32,
    items: &'static [&'static str],
    min_price: i64,
    max_price: i64,
) -> Category {
    Category {
        path,
        seq,
        items,
        min_price,
        max_price,
    }
}

/// Every leaf of the tree.
pub static CATEGORIES: &[Category] = &[
    leaf(
        &["디지털기기", "휴대폰", "삼성", "갤럭시 S"],
        1101,
        &[
            "갤럭시 S24 울트라",
            "갤럭시 S23",
            "갤럭시 S23 FE",
            "갤럭시 S22 플러스",
        ],
        150_000,
        1_900_000,
    ),
    leaf(
        &["디지털기기", "휴대폰", "삼성", "갤럭시 Z"],
        1102,
        &["갤럭시 Z 폴드6", "갤럭시 Z 플립5", "갤럭시 Z 폴드5"],
        300_000,
        2_300_000,
    ),
    leaf(
        &["디지털기기", "휴대폰", "애플", "아이폰"],
        1103,
        &[
            "아이폰 15 Pro",
            "아이폰 15 Pro Max",
            "아이폰 14",
            "아이폰 13 미니",
            "아이폰 SE3",
        ],
        150_000,
        2_000_000,
    ),
    leaf(
        &["디지털기기", "노트북/PC", "노트북", "맥북"],
        1201,
        &["맥북 에어 M2", "맥북 프로 14 M3", "맥북 프로 16 M1 Max"],
        600_000,
        3_500_000,
    ),
    leaf(
        &["디지털기기", "노트북/PC", "노트북", "삼성 갤럭시북"],
        1202,
        &["갤럭시북4 프로", "갤럭시북3 360", "갤럭시북2"],
        300_000,
        2_000_000,
    ),
    leaf(
        &["디지털기기", "노트북/PC", "데스크탑"],
        1203,
        &["게이밍 본체 RTX 4070", "사무용 본체 i5", "맥 미니 M2"],
        200_000,
        2_800_000,
    ),
    leaf(
        &["디지털기기", "태블릿", "아이패드"],
        1301,
        &[
            "아이패드 프로 11 4세대",
            "아이패드 에어 5",
            "아이패드 미니 6",
            "아이패드 10세대",
        ],
        250_000,
        1_600_000,
    ),
    leaf(
        &["디지털기기", "카메라", "미러리스"],
        1401,
        &["소니 A7M4", "후지필름 X-T5", "캐논 R6", "소니 ZV-E10"],
        400_000,
        3_200_000,
    ),
    leaf(
        &["디지털기기", "게임기", "닌텐도"],
        1501,
        &["닌텐도 스위치 OLED", "스위치 라이트", "젤다 왕국의 눈물 칩"],
        30_000,
        400_000,
    ),
    leaf(
        &["디지털기기", "음향기기", "이어폰"],
        1601,
        &["에어팟 프로 2", "갤럭시 버즈2 프로", "소니 WF-1000XM5"],
        30_000,
        350_000,
    ),
    leaf(
        &["가전제품", "생활가전", "청소기"],
        2101,
        &["다이슨 V15", "LG 코드제로 A9", "로보락 S8"],
        50_000,
        1_200_000,
    ),
    leaf(
        &["가전제품", "주방가전", "전자레인지"],
        2201,
        &["삼성 전자레인지 23L", "LG 광파오븐", "쿠쿠 전기밥솥"],
        20_000,
        400_000,
    ),
    leaf(
        &["가전제품", "대형가전", "냉장고"],
        2301,
        &["LG 디오스 냉장고", "삼성 비스포크 냉장고", "미니 냉장고"],
        80_000,
        2_500_000,
    ),
    leaf(
        &["패션의류", "여성의류", "원피스"],
        3101,
        &["플라워 원피스", "니트 원피스", "셔츠 원피스"],
        5_000,
        150_000,
    ),
    leaf(
        &["패션의류", "남성의류", "아우터", "패딩"],
        3201,
        &["노스페이스 눕시", "몽클레르 패딩", "디스커버리 롱패딩"],
        30_000,
        1_800_000,
    ),
    leaf(
        &["패션잡화", "가방", "명품가방", "루이비통"],
        4101,
        &[
            "루이비통 네버풀 MM",
            "루이비통 스피디 25",
            "루이비통 알마 BB",
        ],
        600_000,
        4_000_000,
    ),
    leaf(
        &["패션잡화", "시계", "명품시계"],
        4201,
        &["롤렉스 서브마리너", "오메가 씨마스터", "태그호이어 까레라"],
        900_000,
        15_000_000,
    ),
    leaf(
        &["스포츠/레저", "자전거", "로드자전거"],
        5101,
        &["자이언트 TCR", "메리다 스컬트라", "캐논데일 슈퍼식스"],
        200_000,
        5_000_000,
    ),
    leaf(
        &["스포츠/레저", "골프", "골프채", "드라이버"],
        5201,
        &[
            "테일러메이드 스텔스2 드라이버",
            "핑 G430 드라이버",
            "타이틀리스트 TSR2",
        ],
        100_000,
        900_000,
    ),
    leaf(
        &["가구/인테리어", "침실가구", "침대"],
        6101,
        &["퀸 침대 프레임", "시몬스 매트리스", "원목 싱글 침대"],
        30_000,
        1_500_000,
    ),
    leaf(
        &["도서/티켓/음반", "도서", "소설"],
        7101,
        &["해리포터 전권 세트", "삼체 1-3권", "소년이 온다"],
        3_000,
        120_000,
    ),
    leaf(
        &["유아동/출산", "유모차", "디럭스"],
        8101,
        &["부가부 폭스5", "스토케 익스플로리", "잉글레시나 앱티카"],
        100_000,
        1_600_000,
    ),
    leaf(
        &["자동차/오토바이", "자동차용품", "블랙박스"],
        9101,
        &["아이나비 QXD8000", "파인뷰 X7000", "만도 블랙박스"],
        30_000,
        400_000,
    ),
    leaf(
        &["반려동물용품", "강아지용품", "사료"],
        9201,
        &[
            "로얄캐닌 미니 어덜트 8kg",
            "ANF 6free 연어",
            "나우 스몰브리드",
        ],
        10_000,
        120_000,
    ),
    leaf(
        &["취미/게임/악기", "피규어/레고", "레고"],
        9301,
        &[
            "레고 테크닉 포르쉐 42056",
            "레고 스타워즈 밀레니엄 팔콘",
            "레고 아이디어 타자기",
        ],
        20_000,
        1_200_000,
    ),
];

/// Words after the item in a title.
pub static TITLE_SPECS: &[&str] = &[
    "256GB",
    "512GB",
    "블랙",
    "화이트",
    "실버",
    "풀박스",
    "미개봉",
    "단품",
    "정품",
    "새제품급",
];

/// How sellers end a title.
pub static TITLE_ENDINGS: &[&str] = &[
    "팝니다",
    "판매합니다",
    "S급",
    "A급",
    "급처",
    "택포",
    "네고가능",
    "직거래",
    "일괄판매",
    "",
];

/// Decorations that make titles hard to escape: emoji, quotes, backslashes, `<` and `&`.
pub static TITLE_DECORATIONS: &[&str] = &[
    "🔥",
    "✨",
    "📱",
    "🍎",
    "💯",
    "\"급처\"",
    "\\ 네고 X",
    "<새상품>",
    "A&S 가능",
    "'정품'",
];

/// Lines of a description, `{item}` and `{location}` filled in.
pub static DESCRIPTION_LINES: &[&str] = &[
    "{item} 판매합니다.",
    "사용감 거의 없어요 😊",
    "구매한 지 얼마 안 됐고 생활 기스 조금 있습니다.",
    "직거래는 {location}에서 가능합니다.",
    "택배 거래 시 택배비 별도입니다 📦",
    "네고 문의는 정중하게 부탁드려요 🙏",
    "\"급처\"라서 싸게 올립니다!",
    "<정품> 인증 가능 & 영수증 있습니다.",
    "사진 경로: C:\\사진\\상품.jpg 참고하세요",
    "문의는 채팅 주세요~",
    "교환은 안 받습니다. 쿨거래 하시면 에눌 가능 💸",
    "박스랑 구성품 전부 있어요 (충전기 포함)",
    "<script>alert('x')</script> 같은 장난 문의 사절",
    "가격 내림!! 😭",
];

/// First half of a nickname.
pub static NICK_ADJECTIVES: &[&str] = &[
    "행복한",
    "부지런한",
    "조용한",
    "빠른",
    "착한",
    "친절한",
    "배고픈",
    "졸린",
];

/// Second half of a nickname.
pub static NICK_NOUNS: &[&str] = &[
    "곰",
    "토끼",
    "고양이",
    "판매자",
    "거북이",
    "다람쥐",
    "펭귄",
    "중고왕",
];

/// Trade locations as the site names them.
pub static LOCATIONS: &[&str] = &[
    "서울특별시 강남구",
    "서울특별시 마포구",
    "서울특별시 송파구",
    "서울특별시 관악구",
    "경기도 성남시 분당구",
    "경기도 수원시 영통구",
    "경기도 고양시 일산동구",
    "인천광역시 연수구",
    "부산광역시 해운대구",
    "대구광역시 수성구",
    "대전광역시 유성구",
    "광주광역시 서구",
    "제주특별자치도 제주시",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_is_three_or_four_levels_deep_with_a_sane_price_range() {
        for category in CATEGORIES {
            assert!(matches!(category.path.len(), 3 | 4), "{:?}", category.path);
            assert!(category.min_price > 0 && category.min_price < category.max_price);
            assert!(!category.items.is_empty());
        }
        assert!(CATEGORIES.iter().any(|c| c.path.len() == 3));
        assert!(CATEGORIES.iter().any(|c| c.path.len() == 4));
        assert!(CATEGORIES.iter().any(Category::is_premium));
    }
}
